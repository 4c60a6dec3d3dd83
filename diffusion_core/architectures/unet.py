"""The toolkit's own Unet: its typed config, canonical parameter names and shapes, inputs, cost.

This is the single source of truth for checkpoints of this architecture: `parameter_shapes(cfg)`
lists every float32 weight under the PyTorch module's state_dict name, in state_dict order, derived
from the config by the architectural rules below (never by building a network). The PyTorch Unet
is tested to equal it; the MindSpore port and checkpoint validation read it.

Architecture (Ho et al. 2020, in the shape of lucidrains' denoising-diffusion-pytorch). L levels;
level i has width w_i = dim * dim_mults[i] and resolution S / 2^i (S = image_size).

    time_mlp     sinusoidal(t) [2*ceil(dim/2) wide] -> linear1 -> SiLU -> linear2 (time_dim = 4*dim)
    class_embedding   with num_classes > 0: a learned (num_classes + 1, time_dim) table whose row is
                 added to the time embedding (Ho & Salimans 2022); row num_classes is the null
                 (unconditional) class that classifier-free guidance and label dropout use
    init_conv    conv3x3, in_channels -> dim; with self_condition the input is
                 concat([x, previous x0 estimate]) and in_channels = 2 * channels
    downs.i      block1 (w_{i-1} -> w_i, with w_{-1} = dim), block2 (w_i -> w_i), attn,
                 downsample = conv3x3 stride 2 (w_i -> w_i), all levels but the last
    mid_block1, mid_attn (always full attention), mid_block2, at width w_{L-1}
    ups.i        block1 (w_up + w_i -> w_i), block2 (2 w_i -> w_i), attn,
                 upsample = nearest x2 then conv3x3 (w_i -> w_i), all levels but level 0.
                 ups is indexed by level like downs (ups.0 is the finest) and runs from ups.{L-1}
                 to ups.0; w_up = w_{i+1} (from ups.{i+1}.upsample), or w_{L-1} (from the middle).
                 Each block sees concat([h, skip]); the skips are the outputs of block1 and of
                 block2 + attn of the down path, popped last-in first-out.
    final_block  ResnetBlock (w_0 + dim -> dim) on concat([h, init_conv output])
    final_conv   conv1x1, dim -> channels

ResnetBlock (c_in -> c_out):
    h = norm1(x) * (scale + 1) + shift, (scale, shift) = chunk(time_proj(SiLU(time_emb)), 2)
    h = conv2(dropout(SiLU(norm2(conv1(SiLU(h))))))     conv1, conv2: 3x3; norms: GroupNorm
    out = h + x, through a 1x1 conv `skip` when c_in != c_out
Attention at level i: full softmax attention if full_attn[i], else linear attention (Shen et al.)
    if linear_attn, else none. Either is x + to_out(attend(to_qkv(norm(x)))): to_qkv is a bias-free
    1x1 conv to 3 * heads * dim_head channels laid out as (q|k|v, head, dim_head), to_out is a 1x1
    conv from heads * dim_head channels laid out as (head, dim_head). Per head, with pixels as
    columns (d x n matrices): full: V softmax_keys(Q^T K / sqrt(dim_head))^T; linear:
    (softmax_pixels(K) V^T)^T softmax_features(Q).
Sinusoidal embedding: concat([sin(t f), cos(t f)]), f_k = exp(-ln(10000) k / half), k < half,
    half = ceil(dim / 2); t is the float timestep, computed in float32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, NamedTuple

from ..parsing import ConfigError, require
from .base import Architecture
from .inputs import ModelInput, class_label_input, sample_input, self_condition_input, timestep_input


@dataclass(frozen=True)
class UnetConfig:
    """Shape of the time-conditioned Unet (Ho et al. 2020, as in lucidrains' package)."""

    image_size: int = 28             # height = width, in pixels
    channels: int = 1                # 1 for grayscale, 3 for colour
    dim: int = 32                    # channel width of the first level
    dim_mults: tuple[int, ...] = (1, 2, 2)  # width multiplier per level; len-1 down-samplings
    full_attn: tuple[bool, ...] = (False, False, True)  # full attention at a level (else linear)
    linear_attn: bool = True         # linear attention at levels without full attention
    attn_heads: int = 4
    attn_dim_head: int = 16
    resnet_block_groups: int = 8     # GroupNorm groups; must divide every level's width
    dropout: float = 0.0
    self_condition: bool = False     # Chen et al. 2022: the model also sees its last x0 estimate
    num_classes: int = 0             # > 0: class-conditional, labels 0..num_classes-1 (+ a null class)

    def __post_init__(self) -> None:
        require(self.channels in (1, 3, 4), f"channels must be 1, 3 or 4, got {self.channels}")
        require(self.dim > 0 and self.attn_heads > 0 and self.attn_dim_head > 0,
                "dim, attn_heads and attn_dim_head must be positive")
        require(len(self.dim_mults) >= 1 and all(m > 0 for m in self.dim_mults),
                f"dim_mults must be a non-empty list of positive integers, got {list(self.dim_mults)}")
        require(len(self.full_attn) == len(self.dim_mults),
                f"full_attn needs one entry per level ({len(self.dim_mults)} levels from dim_mults "
                f"{list(self.dim_mults)}), got {len(self.full_attn)}")
        require(self.resnet_block_groups > 0,
                f"resnet_block_groups must be a positive integer, got {self.resnet_block_groups}")
        for m in (1,) + tuple(self.dim_mults):  # the init conv and final block run at width dim
            require((self.dim * m) % self.resnet_block_groups == 0,
                    f"resnet_block_groups={self.resnet_block_groups} must divide every level's width "
                    f"(dim * dim_mult = {self.dim * m}); pick groups that divide {self.dim}")
        require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        require(0 <= self.num_classes <= 100_000, f"num_classes must be between 0 (unconditional) and "
                                                   f"100000, got {self.num_classes}")
        factor = 2 ** (len(self.dim_mults) - 1)
        if self.image_size <= 0 or self.image_size % factor != 0:
            ok = [s for s in (8, 16, 28, 32, 64, 128, 256) if s % factor == 0]
            raise ConfigError(
                f"image_size {self.image_size} cannot be halved {len(self.dim_mults) - 1} times "
                f"(dim_mults has {len(self.dim_mults)} levels): use a multiple of {factor} "
                f"(e.g. {', '.join(map(str, ok))}) or fewer levels in dim_mults")

    @property
    def level_widths(self) -> tuple[int, ...]:
        return tuple(self.dim * m for m in self.dim_mults)


class Layer(NamedTuple):
    """One parametrised or matmul step of the forward pass, enough to derive shapes and FLOPs."""

    name: str          # canonical module name, e.g. "downs.0.block1.conv1"
    kind: str          # conv | linear | norm | embedding | attn_full | attn_linear (matmuls only)
    c_in: int
    c_out: int
    kernel: int = 1    # conv kernel size
    out_size: int = 1  # conv output height = width; attention: sequence length is out_size**2
    bias: bool = True


def time_dim(cfg: UnetConfig) -> int:
    return 4 * cfg.dim


def sinusoidal_dim(cfg: UnetConfig) -> int:
    """Width of the sinusoidal embedding: ceil(dim/2) frequencies, each as a sin and a cos."""
    return 2 * ((cfg.dim + 1) // 2)


def resnet_layers(name: str, c_in: int, c_out: int, size: int, t_dim: int) -> Iterator[Layer]:
    """The layers of one ResnetBlock (the docstring above), c_in -> c_out at size x size."""
    yield Layer(f"{name}.norm1", "norm", c_in, c_in)
    yield Layer(f"{name}.time_proj", "linear", t_dim, 2 * c_in)   # scale and shift for norm1
    yield Layer(f"{name}.conv1", "conv", c_in, c_out, 3, size)
    yield Layer(f"{name}.norm2", "norm", c_out, c_out)
    yield Layer(f"{name}.conv2", "conv", c_out, c_out, 3, size)
    if c_in != c_out:
        yield Layer(f"{name}.skip", "conv", c_in, c_out, 1, size)


def _attention(name: str, kind: str, width: int, size: int, cfg: UnetConfig) -> Iterator[Layer]:
    hidden = cfg.attn_heads * cfg.attn_dim_head
    yield Layer(f"{name}.norm", "norm", width, width)
    yield Layer(f"{name}.to_qkv", "conv", width, 3 * hidden, 1, size, bias=False)
    yield Layer(name, kind, hidden, hidden, 1, size)  # the matmuls; no parameters
    yield Layer(f"{name}.to_out", "conv", hidden, width, 1, size)


def _level_attention(cfg: UnetConfig, level: int) -> str | None:
    if cfg.full_attn[level]:
        return "attn_full"
    return "attn_linear" if cfg.linear_attn else None


def layers(cfg: UnetConfig) -> list[Layer]:
    """Every conv, linear, norm and attention of the Unet in module registration order."""
    widths, n_levels, t_dim = cfg.level_widths, len(cfg.dim_mults), time_dim(cfg)
    sizes = [cfg.image_size // 2 ** i for i in range(n_levels)]
    in_channels = cfg.channels * (2 if cfg.self_condition else 1)
    out: list[Layer] = [
        Layer("time_mlp.linear1", "linear", sinusoidal_dim(cfg), t_dim),
        Layer("time_mlp.linear2", "linear", t_dim, t_dim),
    ]
    if cfg.num_classes:
        out.append(Layer("class_embedding", "embedding", cfg.num_classes + 1, t_dim, bias=False))
    out.append(Layer("init_conv", "conv", in_channels, cfg.dim, 3, cfg.image_size))
    c_prev = cfg.dim
    for i, (w, s) in enumerate(zip(widths, sizes)):
        out += resnet_layers(f"downs.{i}.block1", c_prev, w, s, t_dim)
        out += resnet_layers(f"downs.{i}.block2", w, w, s, t_dim)
        if (kind := _level_attention(cfg, i)) is not None:
            out += _attention(f"downs.{i}.attn", kind, w, s, cfg)
        if i < n_levels - 1:
            out.append(Layer(f"downs.{i}.downsample", "conv", w, w, 3, s // 2))
        c_prev = w
    w, s = widths[-1], sizes[-1]
    out += resnet_layers("mid_block1", w, w, s, t_dim)
    out += _attention("mid_attn", "attn_full", w, s, cfg)
    out += resnet_layers("mid_block2", w, w, s, t_dim)
    for i, (w, s) in enumerate(zip(widths, sizes)):
        w_up = widths[min(i + 1, n_levels - 1)]
        out += resnet_layers(f"ups.{i}.block1", w_up + w, w, s, t_dim)
        out += resnet_layers(f"ups.{i}.block2", 2 * w, w, s, t_dim)
        if (kind := _level_attention(cfg, i)) is not None:
            out += _attention(f"ups.{i}.attn", kind, w, s, cfg)
        if i > 0:
            out.append(Layer(f"ups.{i}.upsample", "conv", w, w, 3, 2 * s))
    out += resnet_layers("final_block", widths[0] + cfg.dim, cfg.dim, cfg.image_size, t_dim)
    out.append(Layer("final_conv", "conv", cfg.dim, cfg.channels, 1, cfg.image_size))
    return out


def parameter_shapes(cfg: UnetConfig) -> dict[str, tuple[int, ...]]:
    """Canonical name -> shape of every float32 parameter, in the PyTorch state_dict order."""
    return layer_shapes(layers(cfg))


def layer_shapes(listed: list[Layer]) -> dict[str, tuple[int, ...]]:
    """The parameters of listed layers: conv (c_out, c_in, k, k), linear (out, in), GroupNorm
    affine (c,), each with a bias of (c_out,) unless the layer has none."""
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in listed:
        if layer.kind == "conv":
            shapes[f"{layer.name}.weight"] = (layer.c_out, layer.c_in, layer.kernel, layer.kernel)
        elif layer.kind == "linear":
            shapes[f"{layer.name}.weight"] = (layer.c_out, layer.c_in)
        elif layer.kind == "norm":  # GroupNorm affine: weight = gamma, bias = beta
            shapes[f"{layer.name}.weight"] = (layer.c_out,)
        elif layer.kind == "embedding":  # a lookup table: c_in rows of width c_out
            shapes[f"{layer.name}.weight"] = (layer.c_in, layer.c_out)
        else:
            continue
        if layer.bias:
            shapes[f"{layer.name}.bias"] = (layer.c_out,)
    return shapes


def count_parameters(cfg: UnetConfig) -> int:
    return sum(math.prod(shape) for shape in parameter_shapes(cfg).values())


def forward_flops(cfg: UnetConfig, batch: int) -> int:
    """Approximate FLOPs of one forward pass on `batch` images, 2 FLOPs per multiply-add.

    Counted: every convolution (2 * c_in * c_out * k^2 per output pixel), every linear layer
    (2 * in * out per sample) and the attention matmuls per head (full: Q^T K and V A^T, 2 * n^2 * d
    each; linear: K V^T and C^T Q, 2 * n * d^2 each; n = pixels, d = dim_head). Not counted:
    biases, GroupNorm, activations, softmax, residual adds, concatenation, upsampling, the
    sinusoidal embedding. This is what torch.utils.flop_counter.FlopCounterMode reports.
    """
    return batch * layer_flops(layers(cfg), cfg.attn_heads, cfg.attn_dim_head)


def layer_flops(listed: list[Layer], heads: int = 1, dim_head: int = 1) -> int:
    """FLOPs per image of listed layers, counted as forward_flops describes."""
    per_sample = 0
    for layer in listed:
        if layer.kind == "conv":
            per_sample += 2 * layer.c_in * layer.c_out * layer.kernel ** 2 * layer.out_size ** 2
        elif layer.kind == "linear":
            per_sample += 2 * layer.c_in * layer.c_out
        elif layer.kind in ("attn_full", "attn_linear"):
            n, d = layer.out_size ** 2, dim_head
            per_head = 2 * 2 * n * n * d if layer.kind == "attn_full" else 2 * 2 * n * d * d
            per_sample += heads * per_head
    return per_sample


def _attention_summary(cfg: UnetConfig) -> str:
    return ", ".join("full" if full else ("linear" if cfg.linear_attn else "none")
                     for full in cfg.full_attn)


class UnetArchitecture(Architecture):
    """The registry entry of the Unet above."""

    name = "unet"
    title = "Unet (Ho et al. 2020, lucidrains' layout)"
    config_class = UnetConfig
    networks = {"pytorch": "backends.pytorch.unet:Unet", "mindspore": "backends.mindspore.unet:Unet"}

    def parameter_shapes(self, cfg: UnetConfig) -> dict[str, tuple[int, ...]]:
        return parameter_shapes(cfg)

    def inputs(self, cfg: UnetConfig) -> tuple[ModelInput, ...]:
        image = (cfg.channels, cfg.image_size, cfg.image_size)
        declared = [sample_input(*image), timestep_input()]
        if cfg.self_condition:
            declared.append(self_condition_input(*image))
        if cfg.num_classes:
            declared.append(class_label_input(cfg.num_classes))
        return tuple(declared)

    def sample_shape(self, cfg: UnetConfig) -> tuple[int, int, int]:
        return (cfg.channels, cfg.image_size, cfg.image_size)

    def forward_flops(self, cfg: UnetConfig, batch: int) -> int:
        return forward_flops(cfg, batch)

    def activation_bytes(self, cfg: UnetConfig, batch: int) -> int:
        """Skips held for the up path, plus the largest temporary: ~4 tensors of a block, or a
        full attention's score and softmax matrices (heads x n^2 twice, n = pixels). Within a
        small factor of what PyTorch allocates; its purpose is to refuse configs that cannot fit."""
        sizes = [cfg.image_size // 2 ** i for i in range(len(cfg.dim_mults))]
        skips = cfg.dim * cfg.image_size ** 2 + sum(2 * w * s * s for w, s in zip(cfg.level_widths, sizes))
        temp = 4 * max(w * s * s for w, s in zip((cfg.dim,) + cfg.level_widths, [cfg.image_size] + sizes))
        for i, s in enumerate(sizes):
            if cfg.full_attn[i] or i == len(sizes) - 1:  # the middle attention is always full
                temp = max(temp, 2 * cfg.attn_heads * (s * s) ** 2)
        return 4 * batch * (skips + temp)

    def card_rows(self, cfg: UnetConfig) -> list[tuple[str, str]]:
        return [("Architecture", f"`{self.name}`: {self.title}"),
                ("Unet", f"dim {cfg.dim}, dim_mults {list(cfg.dim_mults)}, attention per level: "
                         f"{_attention_summary(cfg)}"),
                ("Self-conditioning", "yes" if cfg.self_condition else "no"),
                ("Class-conditional", f"{cfg.num_classes} classes (+ a null class for guidance)"
                                      if cfg.num_classes else "no")]

    def summary(self, cfg: UnetConfig) -> str:
        return (f"{self.name} (dim {cfg.dim}, dim_mults {list(cfg.dim_mults)}, image_size "
                f"{cfg.image_size})")
