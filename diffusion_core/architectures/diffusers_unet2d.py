"""diffusers' UNet2DModel as an architecture entry: its config.json fields, parameter names, cost.

The typed config has diffusers' own field names and defaults, so a diffusers `config.json` (less
its "_class_name"-style metadata) is this entry's "network" section as it is, and the canonical
parameter names are diffusers' own state_dict names: a repo's diffusion_pytorch_model.safetensors
is read without renaming. Only what the DDPM-family models use is supported; any other field or
value is refused by name (`parse`), never ignored.

Architecture (diffusers/models/unets/unet_2d.py), C_i = block_out_channels[i], L levels:

    time         Timesteps(C_0, flip_sin_to_cos, freq_shift) -> time_embedding.linear_1 -> SiLU
                 -> linear_2 (width time_embed_dim = time_embedding_dim or 4 C_0); with
                 num_class_embeds a class_embedding table (no null row) is added to it
    conv_in      conv3x3, in_channels -> C_0
    down_blocks.i   layers_per_block resnets (C_{i-1} -> C_i, then C_i -> C_i), each followed by an
                 attention for AttnDownBlock2D; downsamplers.0.conv (3x3 stride 2) but at the last
                 level. Every resnet/attention output and the downsampled map are skips.
    mid_block    resnets.0, attentions.0 (if add_attention), resnets.1 at C_{L-1}
    up_blocks.i  (i = 0 is the coarsest) layers_per_block + 1 resnets on concat([h, skip]),
                 attentions for AttnUpBlock2D, upsamplers.0.conv (nearest x2, conv3x3) but last
    out          conv_norm_out (GroupNorm), SiLU, conv_out (conv3x3, C_0 -> out_channels)

ResnetBlock2D: h = conv1(act(norm1(x))); "default": h = norm2(h + proj(act(temb))); "scale_shift":
    h = norm2(h) * (1 + scale) + shift; out = (shortcut(x) + conv2(act(h))) / output_scale_factor,
    shortcut a 1x1 conv when widths differ. Attention: x + to_out.0(softmax(QK^T/sqrt(d)) V) over
    the pixels of group_norm(x), heads = C // attention_head_dim, then / output_scale_factor.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Iterator, Optional

from ..parsing import ConfigError, require
from .base import Architecture
from .inputs import BATCH, CLASS_LABEL, ModelInput, sample_input, timestep_input
from .unet import Layer, layer_flops, layer_shapes

DOWN_BLOCKS = ("DownBlock2D", "AttnDownBlock2D")
UP_BLOCKS = ("UpBlock2D", "AttnUpBlock2D")
# diffusers' get_activation: "swish" and "silu" are the same function
ACTIVATIONS = ("silu", "swish")
# Keys of a diffusers config.json that describe the file, not the network.
METADATA_KEYS = ("_class_name", "_diffusers_version", "_name_or_path", "_use_default_values")


@dataclass(frozen=True)
class DiffusersUnet2DConfig:
    """diffusers' UNet2DModel arguments (same names and defaults), limited to what is supported."""

    sample_size: int = 32
    in_channels: int = 3
    out_channels: int = 3
    center_input_sample: bool = False           # feed 2x - 1 instead of x
    time_embedding_type: str = "positional"     # the only one supported
    time_embedding_dim: Optional[int] = None    # None: 4 * block_out_channels[0]
    freq_shift: int = 0
    flip_sin_to_cos: bool = True
    down_block_types: tuple[str, ...] = ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")
    mid_block_type: Optional[str] = "UNetMidBlock2D"
    up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    block_out_channels: tuple[int, ...] = (224, 448, 672, 896)
    layers_per_block: int = 2
    mid_block_scale_factor: float = 1.0
    downsample_padding: int = 1
    downsample_type: str = "conv"
    upsample_type: str = "conv"
    dropout: float = 0.0
    act_fn: str = "silu"
    attention_head_dim: Optional[int] = 8       # None: one head as wide as the block
    norm_num_groups: int = 32
    attn_norm_num_groups: Optional[int] = None
    norm_eps: float = 1e-5
    resnet_time_scale_shift: str = "default"
    add_attention: bool = True
    class_embed_type: Optional[str] = None
    num_class_embeds: Optional[int] = None
    num_train_timesteps: Optional[int] = None   # read by the "learned" time embedding only

    def __post_init__(self) -> None:
        def one_of(name: str, allowed: tuple) -> None:
            value = getattr(self, name)
            require(value in allowed, f"diffusers UNet2DModel {name}={value!r} is not supported here; "
                                      f"supported: {', '.join(map(repr, allowed))}")
        one_of("time_embedding_type", ("positional",))
        one_of("mid_block_type", ("UNetMidBlock2D", None))
        one_of("downsample_type", ("conv",))
        one_of("upsample_type", ("conv",))
        one_of("act_fn", ACTIVATIONS)
        one_of("resnet_time_scale_shift", ("default", "scale_shift"))
        one_of("class_embed_type", (None,))
        for name, allowed in (("down_block_types", DOWN_BLOCKS), ("up_block_types", UP_BLOCKS)):
            bad = [b for b in getattr(self, name) if b not in allowed]
            require(not bad, f"diffusers UNet2DModel {name} has {bad}; supported block types: "
                             f"{', '.join(allowed)}")
        n = len(self.block_out_channels)
        require(n >= 1 and len(self.down_block_types) == n and len(self.up_block_types) == n,
                f"block_out_channels, down_block_types and up_block_types need one entry per level, got "
                f"{n}, {len(self.down_block_types)} and {len(self.up_block_types)}")
        require(self.in_channels == self.out_channels,
                f"out_channels={self.out_channels} differs from in_channels={self.in_channels}: the model "
                "predicts more than eps, x0 or v (a learned variance), which the samplers here cannot use")
        require(self.layers_per_block >= 1, f"layers_per_block must be >= 1, got {self.layers_per_block}")
        require(self.num_class_embeds is None or self.num_class_embeds >= 1,
                f"num_class_embeds must be None or positive, got {self.num_class_embeds}")
        groups = [self.norm_num_groups] + ([self.attn_norm_num_groups] if self.attn_norm_num_groups else [])
        for c in self.block_out_channels:
            for g in groups:
                require(g > 0 and c % g == 0, f"norm groups {g} must divide every block width, got {c}")
        head = self.attention_head_dim
        require(head is None or head > 0, f"attention_head_dim must be None or positive, got {head}")
        attending = [c for c, kind in zip(self.block_out_channels, self.down_block_types) if kind.startswith("Attn")]
        attending += [c for c, kind in zip(reversed(self.block_out_channels), self.up_block_types) if kind.startswith("Attn")]
        attending += [self.block_out_channels[-1]] if self.mid_block_type and self.add_attention else []
        require(head is None or all(c >= head for c in attending),
                f"attention_head_dim {head} is wider than a block with attention ({min(attending or [0])} "
                "channels), which leaves it no head")
        factor = 2 ** (n - 1)
        require(self.sample_size > 0 and self.sample_size % factor == 0,
                f"sample_size {self.sample_size} cannot be halved {n - 1} times; use a multiple of {factor}")

    # --- diffusers config.json <-> this config ---------------------------------------------
    @classmethod
    def parse(cls, data: dict[str, Any], where: str = "config.json") -> "DiffusersUnet2DConfig":
        """From a diffusers UNet2DModel config.json dict; unknown keys and values are refused by name."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must hold a JSON object, got {type(data).__name__}")
        kind = data.get("_class_name", "UNet2DModel")
        require(kind == "UNet2DModel", f"{where} describes a diffusers {kind}; only UNet2DModel is supported")
        known = {f.name for f in fields(cls)}
        unknown = sorted(k for k in data if k not in known and k not in METADATA_KEYS)
        require(not unknown, f"{where} has UNet2DModel field(s) {unknown} that this toolkit does not "
                             "support; it reads " + ", ".join(sorted(known)))
        kwargs = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if f.name == "sample_size" and isinstance(value, (list, tuple)):
                require(len(value) == 2 and value[0] == value[1],
                        f"{where}: sample_size {value} is not square; only square images are supported")
                value = value[0]
            kwargs[f.name] = _typed(value, f.default, f"{where}: {f.name}")
        return cls(**kwargs)

    def to_diffusers(self) -> dict[str, Any]:
        """The config.json diffusers writes for this network (its own field names)."""
        return {"_class_name": "UNet2DModel",
                **{f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                   for f in fields(self)}}

    # --- derived sizes --------------------------------------------------------------------
    @property
    def time_embed_dim(self) -> int:
        return self.time_embedding_dim or 4 * self.block_out_channels[0]

    def heads(self, width: int) -> tuple[int, int]:
        """(heads, dim_head) of an attention at `width`: one head as wide as the block when
        attention_head_dim is None, as UNet2DModel passes it."""
        dim_head = self.attention_head_dim or width
        return width // dim_head, dim_head


# Fields that may be null in a diffusers config.json, with the type of their other values.
NULLABLE = {"time_embedding_dim": int, "attention_head_dim": int, "attn_norm_num_groups": int,
            "mid_block_type": str, "class_embed_type": str, "num_class_embeds": int,
            "num_train_timesteps": int}


def _typed(value: Any, default: Any, where: str) -> Any:
    """value checked against the type of a field's default (ints for floats are fine)."""
    name = where.rsplit(" ", 1)[-1]
    if value is None and name in NULLABLE:
        return None
    kind = NULLABLE.get(name) or type(default)
    if kind is tuple:
        item = type(default[0])
        if isinstance(value, (list, tuple)) and all(isinstance(v, item) and not isinstance(v, bool)
                                                    for v in value):
            return tuple(value)
    elif kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(value, kind):
        return value
    raise ConfigError(f"{where} = {value!r} has the wrong type; expected a value like {default!r}")


# --- the layers, in diffusers' module order ---------------------------------------------------

def resnet(name: str, c_in: int, c_out: int, size: int, cfg: DiffusersUnet2DConfig) -> Iterator[Layer]:
    """ResnetBlock2D's layers, in registration order."""
    yield Layer(f"{name}.norm1", "norm", c_in, c_in)
    yield Layer(f"{name}.conv1", "conv", c_in, c_out, 3, size)
    shift = cfg.resnet_time_scale_shift == "scale_shift"
    yield Layer(f"{name}.time_emb_proj", "linear", cfg.time_embed_dim, (2 if shift else 1) * c_out)
    yield Layer(f"{name}.norm2", "norm", c_out, c_out)
    yield Layer(f"{name}.conv2", "conv", c_out, c_out, 3, size)
    if c_in != c_out:
        yield Layer(f"{name}.conv_shortcut", "conv", c_in, c_out, 1, size)


def attention(name: str, width: int, size: int, cfg: DiffusersUnet2DConfig, norm: bool = True) -> Iterator[Layer]:
    """Attention's layers: group_norm (unless the mid block has none), to_q/k/v, the matmuls, to_out.0."""
    heads, dim_head = cfg.heads(width)
    inner = heads * dim_head
    if norm:
        yield Layer(f"{name}.group_norm", "norm", width, width)
    # The projections are linear layers applied to every pixel: out_size says how many.
    for proj in ("to_q", "to_k", "to_v"):
        yield Layer(f"{name}.{proj}", "linear", width, inner, out_size=size)
    yield Layer(name, "attn_full", inner, inner, 1, size)   # no parameters; c_in = heads * dim_head
    yield Layer(f"{name}.to_out.0", "linear", inner, width, out_size=size)


def mid_attention_has_norm(cfg: DiffusersUnet2DConfig) -> bool:
    """UNetMidBlock2D gives its attention a group norm unless the time scale shift is not 'default'
    and attn_norm_num_groups is unset."""
    return cfg.attn_norm_num_groups is not None or cfg.resnet_time_scale_shift == "default"


def layers(cfg: DiffusersUnet2DConfig) -> list[Layer]:
    """Every conv, linear, norm, embedding and attention of UNet2DModel in state_dict order."""
    widths, n, t_dim = cfg.block_out_channels, len(cfg.block_out_channels), cfg.time_embed_dim
    sizes = [cfg.sample_size // 2 ** i for i in range(n)]
    out = [Layer("conv_in", "conv", cfg.in_channels, widths[0], 3, cfg.sample_size),
           Layer("time_embedding.linear_1", "linear", widths[0], t_dim),
           Layer("time_embedding.linear_2", "linear", t_dim, t_dim)]
    if cfg.num_class_embeds:
        out.append(Layer("class_embedding", "embedding", cfg.num_class_embeds, t_dim, bias=False))
    c_prev = widths[0]
    for i, kind in enumerate(cfg.down_block_types):
        if kind == "AttnDownBlock2D":  # diffusers registers the attentions before the resnets
            for j in range(cfg.layers_per_block):
                out += attention(f"down_blocks.{i}.attentions.{j}", widths[i], sizes[i], cfg)
        for j in range(cfg.layers_per_block):
            out += resnet(f"down_blocks.{i}.resnets.{j}", c_prev if j == 0 else widths[i], widths[i], sizes[i], cfg)
        if i < n - 1:
            out.append(Layer(f"down_blocks.{i}.downsamplers.0.conv", "conv", widths[i], widths[i], 3, sizes[i] // 2))
        c_prev = widths[i]
    up = list(reversed(widths))
    for i, kind in enumerate(cfg.up_block_types):
        level = n - 1 - i
        prev, width, skip_in = up[max(i - 1, 0)], up[i], up[min(i + 1, n - 1)]
        count = cfg.layers_per_block + 1
        if kind == "AttnUpBlock2D":
            for j in range(count):
                out += attention(f"up_blocks.{i}.attentions.{j}", width, sizes[level], cfg)
        for j in range(count):
            skip = skip_in if j == count - 1 else width
            out += resnet(f"up_blocks.{i}.resnets.{j}", (prev if j == 0 else width) + skip, width, sizes[level], cfg)
        if i < n - 1:
            out.append(Layer(f"up_blocks.{i}.upsamplers.0.conv", "conv", width, width, 3, 2 * sizes[level]))
    if cfg.mid_block_type:
        w, s = widths[-1], sizes[-1]
        if cfg.add_attention:
            out += attention("mid_block.attentions.0", w, s, cfg, norm=mid_attention_has_norm(cfg))
        out += resnet("mid_block.resnets.0", w, w, s, cfg)
        out += resnet("mid_block.resnets.1", w, w, s, cfg)
    out.append(Layer("conv_norm_out", "norm", widths[0], widths[0]))
    out.append(Layer("conv_out", "conv", widths[0], cfg.out_channels, 3, cfg.sample_size))
    return out


def forward_flops(cfg: DiffusersUnet2DConfig, batch: int) -> int:
    """FLOPs of one forward as the toolkit's Unet counts them (unet.forward_flops): convolutions,
    linear layers, and per attention 2 * 2 * n^2 * (heads * dim_head) for QK^T and AV."""
    listed = layers(cfg)
    convs = layer_flops([layer for layer in listed if layer.kind == "conv"])
    linear = sum(2 * layer.c_in * layer.c_out * layer.out_size ** 2 for layer in listed if layer.kind == "linear")
    attn = sum(4 * (layer.out_size ** 2) ** 2 * layer.c_in for layer in listed if layer.kind == "attn_full")
    return batch * (convs + linear + attn)


class DiffusersUnet2DArchitecture(Architecture):
    """The registry entry of diffusers' UNet2DModel."""

    name = "diffusers_unet2d"
    title = "UNet2DModel (diffusers; the DDPM paper's published layout)"
    config_class = DiffusersUnet2DConfig
    # PyTorch runs diffusers' own module (a runtime dependency of this architecture only);
    # MindSpore runs the port of its blocks in backends/mindspore/diffusers_unet2d.py.
    networks = {"pytorch": "backends.pytorch.diffusers_unet2d:DiffusersUnet2D",
                "mindspore": "backends.mindspore.diffusers_unet2d:DiffusersUnet2D"}

    def parse_config(self, data: dict[str, Any], where: str = "network"):
        return DiffusersUnet2DConfig.parse(data, where)

    def config_to_dict(self, cfg: DiffusersUnet2DConfig) -> dict[str, Any]:
        found = cfg.to_diffusers()
        found.pop("_class_name")
        return found

    def parameter_shapes(self, cfg: DiffusersUnet2DConfig) -> dict[str, tuple[int, ...]]:
        return layer_shapes(layers(cfg))

    def inputs(self, cfg: DiffusersUnet2DConfig) -> tuple[ModelInput, ...]:
        declared = [sample_input(cfg.in_channels, cfg.sample_size, cfg.sample_size), timestep_input()]
        if cfg.num_class_embeds:
            # diffusers' class embedding has no null row, so there is no label-free default: the
            # input is required (fill None), and guidance by a null class is not available.
            declared.append(ModelInput("class_labels", "int64", (BATCH,), CLASS_LABEL))
        return tuple(declared)

    def sample_shape(self, cfg: DiffusersUnet2DConfig) -> tuple[int, int, int]:
        return (cfg.in_channels, cfg.sample_size, cfg.sample_size)

    def forward_flops(self, cfg: DiffusersUnet2DConfig, batch: int) -> int:
        return forward_flops(cfg, batch)

    def card_rows(self, cfg: DiffusersUnet2DConfig) -> list[tuple[str, str]]:
        return [("Architecture", f"`{self.name}`: {self.title}"),
                ("Blocks", f"block_out_channels {list(cfg.block_out_channels)}, down "
                           f"{list(cfg.down_block_types)}, {cfg.layers_per_block} layers per block"),
                ("Class-conditional", f"{cfg.num_class_embeds} classes" if cfg.num_class_embeds else "no")]

    def summary(self, cfg: DiffusersUnet2DConfig) -> str:
        return (f"{self.name} (block_out_channels {list(cfg.block_out_channels)}, sample_size "
                f"{cfg.sample_size})")
