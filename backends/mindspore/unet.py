"""The time-conditioned Unet of Ho et al. 2020 in MindSpore; the architecture map is the docstring of
diffusion_core/architectures/unet.py and backends/pytorch/unet.py is the same network in PyTorch.

Cells carry the canonical module names; names.py maps the few parameter names MindSpore spells
differently (GroupNorm gamma/beta) to the canonical checkpoint names.
"""
from __future__ import annotations

from mindspore import nn, ops

from diffusion_core.architectures import CLASS_LABEL, SELF_CONDITION, optional_inputs
from diffusion_core.architectures.unet import UnetArchitecture, UnetConfig, time_dim

from .blocks import (Attention, Downsample, GroupNorm, LinearAttention, ResnetBlock, TimeMLP,
                     Upsample, conv2d)


class DownLevel(nn.Cell):
    """Two ResnetBlocks, optional attention, then halve the resolution (all but the last level)."""

    def __init__(self, block1, block2, attn, downsample):
        super().__init__()
        self.block1, self.block2, self.attn, self.downsample = block1, block2, attn, downsample


class UpLevel(nn.Cell):
    """Two ResnetBlocks on [h, skip], optional attention, then double the resolution (not at 0)."""

    def __init__(self, block1, block2, attn, upsample):
        super().__init__()
        self.block1, self.block2, self.attn, self.upsample = block1, block2, attn, upsample


class Unet(nn.Cell):
    """eps / x0 / v network: construct(x (B,C,H,W), time (B,) float32, *inputs) -> (B,C,H,W), where
    inputs are the optional inputs the architecture declares, in that order: the previous x0
    estimate (self_condition) and int64 class labels (num_classes > 0).

    Every declared input is required here (zeros before there is an x0 estimate, the null class
    for unconditional samples): one signature keeps a compiled graph and an exported ONNX graph
    simple. MindSporeDenoiserModel (model.py) fills in the defaults and checks shapes first.
    """

    def __init__(self, cfg: UnetConfig):
        super().__init__()
        self.config = cfg
        roles = [spec.role for spec in optional_inputs(UnetArchitecture().inputs(cfg))]
        # positions of the optional inputs in *inputs (-1: not taken), constants of the graph
        self.self_cond_at = roles.index(SELF_CONDITION) if SELF_CONDITION in roles else -1
        self.labels_at = roles.index(CLASS_LABEL) if CLASS_LABEL in roles else -1
        widths, n_levels, t_dim = cfg.level_widths, len(cfg.dim_mults), time_dim(cfg)
        in_channels = cfg.channels * (2 if cfg.self_condition else 1)

        def block(c_in: int, c_out: int) -> ResnetBlock:
            return ResnetBlock(c_in, c_out, t_dim, cfg.resnet_block_groups, cfg.dropout)

        def attention(width: int, full: bool):
            if not full and not cfg.linear_attn:
                return None
            kind = Attention if full else LinearAttention
            return kind(width, cfg.attn_heads, cfg.attn_dim_head, cfg.resnet_block_groups)

        self.time_mlp = TimeMLP(cfg.dim, t_dim)
        # Ho & Salimans 2022: a class embedding added to the time embedding (row num_classes: null)
        self.class_embedding = nn.Embedding(cfg.num_classes + 1, t_dim) if cfg.num_classes else None
        self.init_conv = conv2d(in_channels, cfg.dim, 3)
        downs = []
        for i, w in enumerate(widths):
            downs.append(DownLevel(
                block(cfg.dim if i == 0 else widths[i - 1], w), block(w, w),
                attention(w, cfg.full_attn[i]), Downsample(w) if i < n_levels - 1 else None))
        self.downs = nn.CellList(downs)
        self.mid_block1 = block(widths[-1], widths[-1])
        self.mid_attn = attention(widths[-1], full=True)
        self.mid_block2 = block(widths[-1], widths[-1])
        ups = []
        for i, w in enumerate(widths):
            w_up = widths[min(i + 1, n_levels - 1)]  # from ups.{i+1}.upsample, or from the middle
            ups.append(UpLevel(block(w_up + w, w), block(2 * w, w),
                               attention(w, cfg.full_attn[i]), Upsample(w) if i > 0 else None))
        self.ups = nn.CellList(ups)
        self.final_block = block(widths[0] + cfg.dim, cfg.dim)
        self.final_conv = conv2d(cfg.dim, cfg.channels, 1)

    def set_decomposed(self, decomposed: bool = True) -> "Unet":
        """Spell GroupNorm and upsampling with basic ops (what ONNX export needs), or not."""
        for _, cell in self.cells_and_names():
            if isinstance(cell, (GroupNorm, Upsample)):
                cell.decomposed = decomposed
        return self

    def construct(self, x, time, *inputs):
        if self.self_cond_at >= 0:  # Chen et al. 2022: the model also sees its last x0 estimate
            x = ops.cat((x, inputs[self.self_cond_at]), axis=1)
        emb = self.time_mlp(time)
        if self.labels_at >= 0:
            emb = emb + self.class_embedding(inputs[self.labels_at])
        h = self.init_conv(x)
        init = h
        skips = []
        for level in self.downs:
            h = level.block1(h, emb)
            skips.append(h)
            h = level.block2(h, emb)
            if level.attn is not None:
                h = level.attn(h)
            skips.append(h)
            if level.downsample is not None:
                h = level.downsample(h)
        h = self.mid_block2(self.mid_attn(self.mid_block1(h, emb)), emb)
        # The skips are used last-in first-out: level i's two skips sit at 2i and 2i + 1.
        for i in range(len(self.ups) - 1, -1, -1):
            level = self.ups[i]
            h = level.block1(ops.cat((h, skips[2 * i + 1]), axis=1), emb)
            h = level.block2(ops.cat((h, skips[2 * i]), axis=1), emb)
            if level.attn is not None:
                h = level.attn(h)
            if level.upsample is not None:
                h = level.upsample(h)
        return self.final_conv(self.final_block(ops.cat((h, init), axis=1), emb))
