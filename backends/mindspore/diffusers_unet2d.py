"""diffusers' UNet2DModel ported to MindSpore: the blocks the DDPM-family models use, cell for cell.

Why a port and not MindSpore Lab's `mindone.diffusers.UNet2DModel`: mindone 0.5.0 installs beside
MindSpore 2.10, but its forward fails on CPU ("The kernel Arange unregistered", then the same for
mint's Conv2d) unless mint.arange and mint.nn.Conv2d are monkeypatched, and it pins
transformers==4.57.1, which needs huggingface_hub < 1.0 while this toolkit pins 2.4 (it also
pulls opencv, mindcv, nltk, sentencepiece). Patched, it matched diffusers to 3.3e-6, which is
what this port reaches without patches or new dependencies.

Cells carry diffusers' module names (down_blocks.0.resnets.1.conv1, ...), so parameter names are
diffusers' state_dict names after names.py's one rule (GroupNorm gamma/beta, Embedding table).
The maths is diffusers' (see diffusion_core/architectures/diffusers_unet2d.py): the same order of
operations, float32 throughout, so outputs agree to float32 rounding.
"""
from __future__ import annotations

import math

import numpy as np
import mindspore as ms
from mindspore import nn, ops

from diffusion_core.architectures import DiffusersUnet2DConfig
from diffusion_core.architectures.diffusers_unet2d import mid_attention_has_norm

from .blocks import conv2d


class GroupNorm(nn.GroupNorm):
    """torch.nn.GroupNorm(groups, channels, eps) with MindSpore's parameter names gamma, beta."""

    def __init__(self, groups: int, channels: int, eps: float):
        super().__init__(groups, channels, eps=eps)
        self.groups, self.eps = groups, eps

    def construct(self, x):
        return ops.group_norm(x, self.groups, self.gamma, self.beta, self.eps)


class Timesteps(nn.Cell):
    """diffusers' get_timestep_embedding: exp(-ln(10000) k / (half - freq_shift)), [sin, cos]
    (or [cos, sin] with flip_sin_to_cos), a zero column for odd widths; frequencies in float32."""

    def __init__(self, width: int, flip_sin_to_cos: bool, freq_shift: float):
        super().__init__()
        half = width // 2
        exponent = np.float32(-math.log(10000.0)) * np.arange(half, dtype=np.float32)
        self.freqs = ms.Tensor(np.exp(exponent / np.float32(half - freq_shift)).reshape(1, -1))
        self.flip, self.pad = flip_sin_to_cos, width % 2

    def construct(self, t):
        args = t.astype(ms.float32).reshape(-1, 1) * self.freqs
        sin, cos = ops.sin(args), ops.cos(args)
        emb = ops.cat((cos, sin), axis=1) if self.flip else ops.cat((sin, cos), axis=1)
        if self.pad:
            emb = ops.pad(emb, (0, 1))
        return emb


class TimestepEmbedding(nn.Cell):
    """linear_1 -> SiLU -> linear_2 (diffusers always uses SiLU here, whatever act_fn says)."""

    def __init__(self, c_in: int, width: int):
        super().__init__()
        self.linear_1 = nn.Dense(c_in, width)
        self.linear_2 = nn.Dense(width, width)

    def construct(self, x):
        return self.linear_2(ops.silu(self.linear_1(x)))


class ResnetBlock2D(nn.Cell):
    """conv1(SiLU(norm1(x))), the time embedding added (or as scale/shift after norm2), then
    conv2(SiLU(norm2(...))), plus the (1x1-projected) input, divided by output_scale_factor."""

    def __init__(self, c_in: int, c_out: int, cfg: DiffusersUnet2DConfig, output_scale_factor: float = 1.0):
        super().__init__()
        groups, eps = cfg.norm_num_groups, cfg.norm_eps
        self.scale_shift = cfg.resnet_time_scale_shift == "scale_shift"
        self.c_out, self.output_scale_factor = c_out, output_scale_factor
        self.norm1 = GroupNorm(groups, c_in, eps)
        self.conv1 = conv2d(c_in, c_out, 3)
        self.time_emb_proj = nn.Dense(cfg.time_embed_dim, (2 if self.scale_shift else 1) * c_out)
        self.norm2 = GroupNorm(groups, c_out, eps)
        self.dropout = nn.Dropout(p=cfg.dropout) if cfg.dropout > 0 else None
        self.conv2 = conv2d(c_out, c_out, 3)
        self.conv_shortcut = conv2d(c_in, c_out, 1) if c_in != c_out else None

    def construct(self, x, temb):
        h = self.conv1(ops.silu(self.norm1(x)))
        temb = self.time_emb_proj(ops.silu(temb))
        if self.scale_shift:
            scale, shift = ops.split(temb.reshape(-1, 2 * self.c_out, 1, 1), self.c_out, axis=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + temb.reshape(-1, self.c_out, 1, 1))
        h = ops.silu(h)
        if self.dropout is not None:
            h = self.dropout(h)
        h = self.conv2(h)
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        out = skip + h
        return out if self.output_scale_factor == 1.0 else out / self.output_scale_factor


class Attention(nn.Cell):
    """Softmax attention over the pixels (Vaswani et al. 2017) with diffusers' AttnProcessor2_0
    steps: group_norm, to_q/to_k/to_v per pixel, per head softmax(QK^T / sqrt(d)) V, to_out.0,
    plus the input, divided by rescale_output_factor."""

    def __init__(self, width: int, cfg: DiffusersUnet2DConfig, norm_groups, rescale: float = 1.0):
        super().__init__()
        self.heads, self.dim_head = cfg.heads(width)
        inner = self.heads * self.dim_head
        self.width, self.rescale = width, rescale
        self.group_norm = GroupNorm(norm_groups, width, cfg.norm_eps) if norm_groups else None
        self.to_q = nn.Dense(width, inner)
        self.to_k = nn.Dense(width, inner)
        self.to_v = nn.Dense(width, inner)
        self.to_out = nn.CellList([nn.Dense(inner, width)])   # diffusers' to_out.0 (to_out.1 is dropout)

    def construct(self, x):
        height, width = x.shape[2], x.shape[3]
        n, inner = height * width, self.heads * self.dim_head
        h = x if self.group_norm is None else self.group_norm(x)
        h = h.reshape(-1, self.width, n).swapaxes(1, 2)                      # (B, n, C)

        def split_heads(t):                                                  # (B, heads, n, d)
            return t.reshape(-1, n, self.heads, self.dim_head).swapaxes(1, 2)
        q, k, v = split_heads(self.to_q(h)), split_heads(self.to_k(h)), split_heads(self.to_v(h))
        scores = ops.matmul(q, k.swapaxes(-1, -2)) * (self.dim_head ** -0.5)
        out = ops.matmul(ops.softmax(scores, axis=-1), v)                     # (B, heads, n, d)
        out = self.to_out[0](out.swapaxes(1, 2).reshape(-1, n, inner))       # (B, n, C)
        out = out.swapaxes(1, 2).reshape(-1, self.width, height, width) + x
        return out if self.rescale == 1.0 else out / self.rescale


class Downsample2D(nn.Cell):
    """conv3x3 stride 2; with padding 0, diffusers pads one row and column at the far edges first."""

    def __init__(self, width: int, padding: int):
        super().__init__()
        self.pad_far = padding == 0
        self.conv = nn.Conv2d(width, width, 3, stride=2, pad_mode="pad", padding=padding, has_bias=True)

    def construct(self, x):
        if self.pad_far:
            x = ops.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample2D(nn.Cell):
    """Nearest-neighbour x2, then conv3x3."""

    def __init__(self, width: int):
        super().__init__()
        self.conv = conv2d(width, width, 3)

    def construct(self, x):
        # size=, not scale_factor=: MindSpore 2.10 refuses scale_factor with "nearest" on 4-D input.
        return self.conv(ops.interpolate(x, size=(2 * x.shape[2], 2 * x.shape[3]), mode="nearest"))


class Block(nn.Cell):
    """A Down/Up block: resnets, attentions (Attn* types, else none) and one resampler (or none)."""

    def __init__(self, resnets, attentions, resampler, resampler_name: str):
        super().__init__()
        self.resnets = nn.CellList(resnets)
        self.attentions = nn.CellList(attentions) if attentions else None
        self.has_attention = bool(attentions)
        setattr(self, resampler_name, nn.CellList([resampler]) if resampler is not None else None)
        self.resampler_name = resampler_name

    def resample(self, h):
        cells = getattr(self, self.resampler_name)
        return h if cells is None else cells[0](h)


class MidBlock(nn.Cell):
    def __init__(self, cfg: DiffusersUnet2DConfig):
        super().__init__()
        w, factor = cfg.block_out_channels[-1], cfg.mid_block_scale_factor
        groups = (cfg.attn_norm_num_groups or cfg.norm_num_groups) if mid_attention_has_norm(cfg) else None
        self.attentions = nn.CellList([Attention(w, cfg, groups, factor)]) if cfg.add_attention else None
        self.resnets = nn.CellList([ResnetBlock2D(w, w, cfg, factor), ResnetBlock2D(w, w, cfg, factor)])

    def construct(self, h, emb):
        h = self.resnets[0](h, emb)
        if self.attentions is not None:
            h = self.attentions[0](h)
        return self.resnets[1](h, emb)


class DiffusersUnet2D(nn.Cell):
    """construct(x (B,C,H,W), time (B,) float32[, class_labels (B,) int64]) -> (B,C,H,W)."""

    def __init__(self, cfg: DiffusersUnet2DConfig):
        super().__init__()
        self.config = cfg
        widths, n, t_dim = cfg.block_out_channels, len(cfg.block_out_channels), cfg.time_embed_dim
        self.center_input_sample = cfg.center_input_sample
        self.conv_in = conv2d(cfg.in_channels, widths[0], 3)
        self.time_proj = Timesteps(widths[0], cfg.flip_sin_to_cos, cfg.freq_shift)
        self.time_embedding = TimestepEmbedding(widths[0], t_dim)
        self.class_embedding = nn.Embedding(cfg.num_class_embeds, t_dim) if cfg.num_class_embeds else None
        downs, c_prev = [], widths[0]
        for i, kind in enumerate(cfg.down_block_types):
            w = widths[i]
            resnets = [ResnetBlock2D(c_prev if j == 0 else w, w, cfg) for j in range(cfg.layers_per_block)]
            attentions = ([Attention(w, cfg, cfg.norm_num_groups) for _ in range(cfg.layers_per_block)]
                          if kind == "AttnDownBlock2D" else [])
            resample = Downsample2D(w, cfg.downsample_padding) if i < n - 1 else None
            downs.append(Block(resnets, attentions, resample, "downsamplers"))
            c_prev = w
        self.down_blocks = nn.CellList(downs)
        self.mid_block = MidBlock(cfg) if cfg.mid_block_type else None
        ups, up = [], list(reversed(widths))
        for i, kind in enumerate(cfg.up_block_types):
            prev, w, skip_in, count = up[max(i - 1, 0)], up[i], up[min(i + 1, n - 1)], cfg.layers_per_block + 1
            resnets = [ResnetBlock2D((prev if j == 0 else w) + (skip_in if j == count - 1 else w), w, cfg)
                       for j in range(count)]
            attentions = [Attention(w, cfg, cfg.norm_num_groups) for _ in range(count)] if kind == "AttnUpBlock2D" else []
            ups.append(Block(resnets, attentions, Upsample2D(w) if i < n - 1 else None, "upsamplers"))
        self.up_blocks = nn.CellList(ups)
        self.conv_norm_out = GroupNorm(cfg.norm_num_groups, widths[0], cfg.norm_eps)
        self.conv_out = conv2d(widths[0], cfg.out_channels, 3)

    def construct(self, x, time, *inputs):
        if self.center_input_sample:
            x = 2 * x - 1.0
        emb = self.time_embedding(self.time_proj(time))
        if self.class_embedding is not None:
            emb = emb + self.class_embedding(inputs[0])
        h = self.conv_in(x)
        skips = [h]
        for block in self.down_blocks:
            for j in range(len(block.resnets)):
                h = block.resnets[j](h, emb)
                if block.has_attention:
                    h = block.attentions[j](h)
                skips.append(h)
            if block.downsamplers is not None:
                h = block.resample(h)
                skips.append(h)
        if self.mid_block is not None:
            h = self.mid_block(h, emb)
        last = len(skips) - 1   # the skips are used last-in first-out
        for block in self.up_blocks:
            for j in range(len(block.resnets)):
                h = block.resnets[j](ops.cat((h, skips[last]), axis=1), emb)
                last -= 1
                if block.has_attention:
                    h = block.attentions[j](h)
            h = block.resample(h)
        return self.conv_out(ops.silu(self.conv_norm_out(h)))
