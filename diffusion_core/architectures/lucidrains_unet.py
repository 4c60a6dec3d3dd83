"""lucidrains' denoising-diffusion-pytorch Unet, in its two weight layouts, as architecture entries.

`lucidrains_unet` is the 2.x Unet (also 1.x from about 1.5): canonical names are its state_dict
names, so a trainer milestone's `ema`/`model` weights are read as they are. `lucidrains_unet_v0`
is the earlier layout that lvyufeng's MindSpore port (denoising-diffusion-mindspore) copied;
its canonical names are the PyTorch spelling of the port's parameters (GroupNorm weight/bias).
They are separate entries because almost every tensor differs: the toolkit's own `unet` coincides
with neither (GroupNorm and a 3x3 init conv, FiLM before the first conv), hence these entries.

Both, L levels, dims = [init_dim, dim * m for m in dim_mults], pairs (d_in, d_out) = dims[i], dims[i+1]:
    time_mlp     sinusoidal(t) [dim wide, f_k = theta^(-k / (half - 1))] -> .1 Linear -> GELU -> .3
    init_conv    conv7x7 on x (or concat([previous x0 estimate, x]) with self_condition)
    downs.i      .0, .1 ResnetBlock(d_in -> d_in); .2 attention; .3 downsample to d_out (last: conv3x3)
    mid_block1, mid_attn (full attention), mid_block2 at dims[-1]
    ups.i        (reversed pairs) .0, .1 ResnetBlock(d_out + d_in -> d_out) on concat([h, skip]);
                 .2 attention; .3 nearest x2 + conv3x3 to d_in (last: conv3x3)
    final_res_block ResnetBlock(2 init_dim -> init_dim) on concat([h, init_conv output]); final_conv 1x1
ResnetBlock: mlp.1 (SiLU, Linear -> scale, shift); block1 = SiLU(norm(proj(x)) (scale + 1) + shift);
    block2 = SiLU(norm(proj(h))); + res_conv(x) (1x1 when widths differ).
2.x:  norm = RMSNorm (g (1, C, 1, 1): x / |x|_channels * g * sqrt(C)); attention = x + attn(x), attn
      with its own RMSNorm and learned memory key/values (mem_kv) prepended to k and v; linear
      attention everywhere but full_attn levels; downsample = pixel-unshuffle 2x2 + conv1x1.
v0:   norm = GroupNorm; the block convs are weight-standardised (Qiao et al. 2019; baked into
      plain weights when converted, so the network here uses plain convs); attention =
      x + fn(LayerNorm(x)) (`.fn.fn.`, `.fn.norm.g`), no mem_kv, linear attention at every level
      divides v by the pixel count; downsample = conv4x4 stride 2.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, NamedTuple, Optional

from ..parsing import require
from .base import Architecture
from .inputs import ModelInput, sample_input, self_condition_input, timestep_input


@dataclass(frozen=True)
class LucidrainsUnetConfig:
    """Unet(...) of denoising-diffusion-pytorch 2.x, per level where it takes tuples."""

    image_size: int = 32                     # GaussianDiffusion(image_size=...); square
    channels: int = 3
    dim: int = 64
    init_dim: Optional[int] = None           # None: dim
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)
    self_condition: bool = False
    full_attn: tuple[bool, ...] = (False, False, False, True)
    attn_heads: tuple[int, ...] = (4, 4, 4, 4)
    attn_dim_head: tuple[int, ...] = (32, 32, 32, 32)
    num_mem_kv: int = 4
    sinusoidal_pos_emb_theta: int = 10000
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_common(self)
        n = len(self.dim_mults)
        for name in ("full_attn", "attn_heads", "attn_dim_head"):
            require(len(getattr(self, name)) == n, f"{name} needs one entry per level ({n}), got "
                                                   f"{list(getattr(self, name))}")
        require(self.num_mem_kv >= 1, f"num_mem_kv must be >= 1, got {self.num_mem_kv}")


@dataclass(frozen=True)
class LucidrainsUnetV0Config:
    """The Unet of denoising-diffusion-mindspore (lucidrains' 0.x layout)."""

    image_size: int = 32
    channels: int = 3
    dim: int = 64
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)
    self_condition: bool = False
    resnet_block_groups: int = 8             # GroupNorm groups: not recorded in the weights
    attn_heads: int = 4                      # heads * dim_head is in the weights, not the split
    attn_dim_head: int = 32
    dropout: float = 0.0

    @property
    def init_dim(self) -> int:               # the port's final block assumes init_dim == dim
        return self.dim

    def __post_init__(self) -> None:
        _check_common(self)
        for w in [self.dim] + [self.dim * m for m in self.dim_mults]:
            require(w % self.resnet_block_groups == 0,
                    f"resnet_block_groups={self.resnet_block_groups} must divide every width, got {w}")


def _check_common(cfg) -> None:
    require(cfg.channels >= 1 and cfg.dim >= 2, "channels and dim must be positive (dim >= 2)")
    require(len(cfg.dim_mults) >= 1 and all(m > 0 for m in cfg.dim_mults), "dim_mults must be positive")
    factor = 2 ** (len(cfg.dim_mults) - 1)
    require(cfg.image_size > 0 and cfg.image_size % factor == 0,
            f"image_size {cfg.image_size} must be a multiple of {factor} ({len(cfg.dim_mults)} levels)")


class Param(NamedTuple):
    """One tensor, or one parameter-free matmul step (kind attn_*), with what FLOPs need."""

    name: str
    shape: tuple[int, ...]
    kind: str = "tensor"     # tensor | conv | linear | attn_full | attn_linear
    size: int = 1            # output height = width (conv), or attention resolution
    memory: int = 0          # attention: memory key/values per head
    heads: int = 0           # attention: heads and their width
    dim_head: int = 0


def _conv(name: str, c_out: int, c_in: int, k: int, size: int, bias: bool = True) -> Iterator[Param]:
    yield Param(f"{name}.weight", (c_out, c_in, k, k), "conv", size)
    if bias:
        yield Param(f"{name}.bias", (c_out,))


def _linear(name: str, c_out: int, c_in: int) -> Iterator[Param]:
    yield Param(f"{name}.weight", (c_out, c_in), "linear")
    yield Param(f"{name}.bias", (c_out,))


def _norm(name: str, c: int, v0: bool) -> Iterator[Param]:
    if v0:   # GroupNorm affine
        yield Param(f"{name}.weight", (c,))
        yield Param(f"{name}.bias", (c,))
    else:    # RMSNorm gain
        yield Param(f"{name}.g", (1, c, 1, 1))


def _resnet(name: str, c_in: int, c_out: int, size: int, t_dim: int, v0: bool) -> Iterator[Param]:
    yield from _linear(f"{name}.mlp.1", 2 * c_out, t_dim)
    for block, c in (("block1", c_in), ("block2", c_out)):
        yield from _conv(f"{name}.{block}.proj", c_out, c, 3, size)
        yield from _norm(f"{name}.{block}.norm", c_out, v0)
    if c_in != c_out:
        yield from _conv(f"{name}.res_conv", c_out, c_in, 1, size)


def _attention(name: str, width: int, size: int, full: bool, heads: int, dim_head: int, mem: int,
               v0: bool) -> Iterator[Param]:
    hidden, kind = heads * dim_head, "attn_full" if full else "attn_linear"
    inner = f"{name}.fn.fn" if v0 else name
    if not v0:
        yield Param(f"{name}.mem_kv", (2, heads, mem, dim_head) if full else (2, heads, dim_head, mem))
        yield Param(f"{name}.norm.g", (1, width, 1, 1))
    yield from _conv(f"{inner}.to_qkv", 3 * hidden, width, 1, size, bias=False)
    yield Param(inner, (), kind, size, 0 if v0 else mem, heads, dim_head)   # the matmuls: no tensor
    if full:
        yield from _conv(f"{inner}.to_out", width, hidden, 1, size)
    else:
        yield from _conv(f"{inner}.to_out.0", width, hidden, 1, size)
        yield Param(f"{inner}.to_out.1.g", (1, width, 1, 1))
    if v0:
        yield Param(f"{name}.fn.norm.g", (1, width, 1, 1))


def params(cfg) -> list[Param]:
    """Every tensor in state_dict order (and the attention matmuls, for FLOPs)."""
    v0 = isinstance(cfg, LucidrainsUnetV0Config)
    init_dim = cfg.init_dim or cfg.dim
    dims = [init_dim] + [cfg.dim * m for m in cfg.dim_mults]
    pairs, n, t_dim = list(zip(dims[:-1], dims[1:])), len(cfg.dim_mults), 4 * cfg.dim
    sizes = [cfg.image_size // 2 ** i for i in range(n)]
    full = (False,) * n if v0 else cfg.full_attn
    heads = (cfg.attn_heads,) * n if v0 else cfg.attn_heads
    dim_head = (cfg.attn_dim_head,) * n if v0 else cfg.attn_dim_head
    mem = 0 if v0 else cfg.num_mem_kv
    in_channels = cfg.channels * (2 if cfg.self_condition else 1)
    out = [*_conv("init_conv", init_dim, in_channels, 7, cfg.image_size),
           *_linear("time_mlp.1", t_dim, cfg.dim), *_linear("time_mlp.3", t_dim, t_dim)]
    for i, (d_in, d_out) in enumerate(pairs):
        s = sizes[i]
        out += _resnet(f"downs.{i}.0", d_in, d_in, s, t_dim, v0)
        out += _resnet(f"downs.{i}.1", d_in, d_in, s, t_dim, v0)
        out += _attention(f"downs.{i}.2", d_in, s, full[i], heads[i], dim_head[i], mem, v0)
        if i == n - 1:
            out += _conv(f"downs.{i}.3", d_out, d_in, 3, s)
        elif v0:
            out += _conv(f"downs.{i}.3", d_out, d_in, 4, s // 2)
        else:
            out += _conv(f"downs.{i}.3.1", d_out, 4 * d_in, 1, s // 2)
    for i, (d_in, d_out) in enumerate(reversed(pairs)):
        level = n - 1 - i
        s = sizes[level]
        out += _resnet(f"ups.{i}.0", d_out + d_in, d_out, s, t_dim, v0)
        out += _resnet(f"ups.{i}.1", d_out + d_in, d_out, s, t_dim, v0)
        out += _attention(f"ups.{i}.2", d_out, s, full[level], heads[level], dim_head[level], mem, v0)
        out += _conv(f"ups.{i}.3" if i == n - 1 else f"ups.{i}.3.1", d_in, d_out, 3, s if i == n - 1 else 2 * s)
    mid, s = dims[-1], sizes[-1]
    out += _resnet("mid_block1", mid, mid, s, t_dim, v0)
    out += _attention("mid_attn", mid, s, True, heads[-1], dim_head[-1], mem, v0)
    out += _resnet("mid_block2", mid, mid, s, t_dim, v0)
    out += _resnet("final_res_block", 2 * init_dim, init_dim, cfg.image_size, t_dim, v0)
    out += _conv("final_conv", cfg.channels, init_dim, 1, cfg.image_size)
    return out


def forward_flops(cfg, batch: int) -> int:
    """Convolutions, linear layers and the attention matmuls (2 FLOPs per multiply-add; with
    memory key/values the keys number n + num_mem_kv), as FlopCounterMode counts lucidrains' Unet."""
    total = 0
    for p in params(cfg):
        if p.kind == "conv":
            c_out, c_in, k, _ = p.shape
            total += 2 * c_out * c_in * k * k * p.size ** 2
        elif p.kind == "linear":
            total += 2 * p.shape[0] * p.shape[1]
        elif p.kind in ("attn_full", "attn_linear"):
            hidden, n = p.heads * p.dim_head, p.size ** 2
            keys = n + p.memory
            if p.kind == "attn_full":     # Q K^T and A V: n x keys x d each, per head
                total += 2 * 2 * n * keys * hidden
            else:                         # K V^T over the keys, then the (d x d) context with Q
                total += 2 * hidden * p.dim_head * (keys + n)
    return batch * total


class _LucidrainsBase(Architecture):
    def parameter_shapes(self, cfg) -> dict[str, tuple[int, ...]]:
        return {p.name: p.shape for p in params(cfg) if p.kind in ("tensor", "conv", "linear")}

    def inputs(self, cfg) -> tuple[ModelInput, ...]:
        image = (cfg.channels, cfg.image_size, cfg.image_size)
        declared = [sample_input(*image), timestep_input()]
        if cfg.self_condition:
            declared.append(self_condition_input(*image))
        return tuple(declared)

    def sample_shape(self, cfg) -> tuple[int, int, int]:
        return (cfg.channels, cfg.image_size, cfg.image_size)

    def forward_flops(self, cfg, batch: int) -> int:
        return forward_flops(cfg, batch)

    def card_rows(self, cfg) -> list[tuple[str, str]]:
        return [("Architecture", f"`{self.name}`: {self.title}"),
                ("Unet", f"dim {cfg.dim}, dim_mults {list(cfg.dim_mults)}"),
                ("Self-conditioning", "yes" if cfg.self_condition else "no")]

    def summary(self, cfg) -> str:
        return f"{self.name} (dim {cfg.dim}, dim_mults {list(cfg.dim_mults)}, image_size {cfg.image_size})"


class LucidrainsUnetArchitecture(_LucidrainsBase):
    name = "lucidrains_unet"
    title = "Unet of lucidrains' denoising-diffusion-pytorch 2.x"
    config_class = LucidrainsUnetConfig
    networks = {"pytorch": "backends.pytorch.lucidrains_unet:LucidrainsUnet",
                "mindspore": "backends.mindspore.lucidrains_unet:LucidrainsUnet"}


class LucidrainsUnetV0Architecture(_LucidrainsBase):
    name = "lucidrains_unet_v0"
    title = "Unet of denoising-diffusion-mindspore (lucidrains' 0.x layout)"
    config_class = LucidrainsUnetV0Config
    networks = {"pytorch": "backends.pytorch.lucidrains_unet:LucidrainsUnet",
                "mindspore": "backends.mindspore.lucidrains_unet:LucidrainsUnet"}
