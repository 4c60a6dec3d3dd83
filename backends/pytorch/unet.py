"""The time-conditioned Unet of Ho et al. 2020, shaped like lucidrains' denoising-diffusion-pytorch.

The module names are the canonical checkpoint names; diffusion_core/architectures/unet.py derives the same
names and shapes from the config alone, and its docstring is the map of the architecture.
"""
from __future__ import annotations

import torch
from torch import nn

from diffusion_core.architectures import CLASS_LABEL, SELF_CONDITION, optional_inputs
from diffusion_core.architectures.unet import UnetArchitecture, UnetConfig, time_dim

from .blocks import Attention, Downsample, LinearAttention, ResnetBlock, TimeMLP, Upsample


class DownLevel(nn.Module):
    """Two ResnetBlocks, optional attention, then halve the resolution (all but the last level)."""

    def __init__(self, block1: ResnetBlock, block2: ResnetBlock, attn: nn.Module | None,
                 downsample: Downsample | None):
        super().__init__()
        self.block1, self.block2, self.attn, self.downsample = block1, block2, attn, downsample


class UpLevel(nn.Module):
    """Two ResnetBlocks on [h, skip], optional attention, then double the resolution (not at 0)."""

    def __init__(self, block1: ResnetBlock, block2: ResnetBlock, attn: nn.Module | None,
                 upsample: Upsample | None):
        super().__init__()
        self.block1, self.block2, self.attn, self.upsample = block1, block2, attn, upsample


class Unet(nn.Module):
    """eps / x0 / v network: forward(x (B,C,H,W), time (B,) float, *inputs) -> (B,C,H,W), where
    inputs are the optional inputs the architecture declares for this config, in that order: the
    previous x0 estimate (self_condition) and int64 class labels (num_classes > 0).

    The output is the raw prediction; diffusion_core/prediction.py says what it means.
    """

    def __init__(self, cfg: UnetConfig):
        super().__init__()
        self.config = cfg
        widths, n_levels, t_dim = cfg.level_widths, len(cfg.dim_mults), time_dim(cfg)
        in_channels = cfg.channels * (2 if cfg.self_condition else 1)

        def block(c_in: int, c_out: int) -> ResnetBlock:
            return ResnetBlock(c_in, c_out, t_dim, cfg.resnet_block_groups, cfg.dropout)

        def attention(width: int, full: bool) -> nn.Module | None:
            if not full and not cfg.linear_attn:
                return None
            kind = Attention if full else LinearAttention
            return kind(width, cfg.attn_heads, cfg.attn_dim_head, cfg.resnet_block_groups)

        self.roles = [spec.role for spec in optional_inputs(UnetArchitecture().inputs(cfg))]
        self.time_mlp = TimeMLP(cfg.dim, t_dim)
        # Ho & Salimans 2022: a class embedding added to the time embedding; row num_classes is
        # the null class. nn.Embedding's N(0, 1) start is as large as the time embedding's output.
        self.class_embedding = nn.Embedding(cfg.num_classes + 1, t_dim) if cfg.num_classes else None
        # 3x3 like Ho et al.: one kernel size and padding for every conv of the net; a 7x7 stem
        # (lucidrains) buys little receptive field on 28x28 images.
        self.init_conv = nn.Conv2d(in_channels, cfg.dim, 3, padding=1)
        self.downs = nn.ModuleList()
        for i, w in enumerate(widths):
            self.downs.append(DownLevel(
                block(cfg.dim if i == 0 else widths[i - 1], w), block(w, w),
                attention(w, cfg.full_attn[i]), Downsample(w) if i < n_levels - 1 else None))
        self.mid_block1 = block(widths[-1], widths[-1])
        self.mid_attn = attention(widths[-1], full=True)
        self.mid_block2 = block(widths[-1], widths[-1])
        # ups is indexed by level like downs (ups.0 is the finest level) and runs from the last.
        # Registered after the middle so that state_dict order follows the data flow.
        self.ups = nn.ModuleList()
        for i, w in enumerate(widths):
            w_up = widths[min(i + 1, n_levels - 1)]  # from ups.{i+1}.upsample, or from the middle
            self.ups.append(UpLevel(
                block(w_up + w, w), block(2 * w, w),
                attention(w, cfg.full_attn[i]), Upsample(w) if i > 0 else None))
        self.final_block = block(widths[0] + cfg.dim, cfg.dim)
        self.final_conv = nn.Conv2d(cfg.dim, cfg.channels, 1)

    def check_inputs(self, x: torch.Tensor, time: torch.Tensor, inputs: tuple) -> dict:
        """The optional inputs by role; a ValueError names expected and actual shapes before any
        conv sees the input."""
        cfg = self.config
        expected = (cfg.channels, cfg.image_size, cfg.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"Unet input x must have shape (batch, {', '.join(map(str, expected))}) for this "
                f"config (channels={cfg.channels}, image_size={cfg.image_size}), got "
                f"{tuple(x.shape)}; resize the images or build the model for this size")
        if time.ndim != 1 or time.shape[0] != x.shape[0]:
            raise ValueError(f"time must have shape ({x.shape[0]},), one timestep per image, "
                             f"got {tuple(time.shape)}")
        if len(inputs) > len(self.roles):
            raise ValueError(f"this Unet takes {len(self.roles)} input(s) after x and time "
                             f"({', '.join(self.roles) or 'none'}), got {len(inputs)}")
        by_role = dict(zip(self.roles, inputs))
        # Inputs left out (a direct call) take their declared defaults: zeros before there is an
        # x0 estimate (Chen et al. 2022), the null class for an unconditional sample.
        if SELF_CONDITION in self.roles and by_role.get(SELF_CONDITION) is None:
            by_role[SELF_CONDITION] = torch.zeros_like(x)
        if CLASS_LABEL in self.roles and by_role.get(CLASS_LABEL) is None:
            by_role[CLASS_LABEL] = torch.full((x.shape[0],), cfg.num_classes, dtype=torch.int64,
                                              device=x.device)
        cond = by_role.get(SELF_CONDITION)
        if cond is not None and cond.shape != x.shape:
            raise ValueError(f"the self-conditioning input must have the shape of x {tuple(x.shape)}, "
                             f"got {tuple(cond.shape)}")
        labels = by_role.get(CLASS_LABEL)
        if labels is not None and tuple(labels.shape) != (x.shape[0],):
            raise ValueError(f"class labels must have shape ({x.shape[0]},), got {tuple(labels.shape)}")
        return by_role

    def forward(self, x: torch.Tensor, time: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        by_role = self.check_inputs(x, time, inputs)
        if self.config.self_condition:  # Chen et al. 2022: the model also sees its last x0 estimate
            x = torch.cat([x, by_role[SELF_CONDITION]], dim=1)
        emb = self.time_mlp(time)
        if self.class_embedding is not None:
            emb = emb + self.class_embedding(by_role[CLASS_LABEL])
        h = self.init_conv(x)
        init, skips = h, []
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
        for level in reversed(self.ups):
            h = level.block1(torch.cat([h, skips.pop()], dim=1), emb)
            h = level.block2(torch.cat([h, skips.pop()], dim=1), emb)
            if level.attn is not None:
                h = level.attn(h)
            if level.upsample is not None:
                h = level.upsample(h)
        return self.final_conv(self.final_block(torch.cat([h, init], dim=1), emb))
