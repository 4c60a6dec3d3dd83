"""The test architecture of plain_unet/__init__.py in PyTorch, from the toolkit's own blocks."""
from __future__ import annotations

import torch
from torch import nn

from backends.pytorch.blocks import Downsample, ResnetBlock, TimeMLP, Upsample


class Level(nn.Module):
    """A block, then an optional resampling registered under its canonical name."""

    def __init__(self, block, resample, name):
        super().__init__()
        self.block, self.name = block, name
        if resample is not None:
            setattr(self, name, resample)

    def resample(self, h):
        return getattr(self, self.name)(h) if hasattr(self, self.name) else h


class PlainUnet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        t_dim, w, n = 4 * cfg.dim, cfg.widths, len(cfg.dim_mults)
        self.time_mlp = TimeMLP(cfg.dim, t_dim)
        self.init_conv = nn.Conv2d(cfg.channels, cfg.dim, 3, padding=1)
        self.downs = nn.ModuleList(
            Level(ResnetBlock(cfg.dim if i == 0 else w[i - 1], w[i], t_dim, cfg.groups),
                  Downsample(w[i]) if i < n - 1 else None, "downsample") for i in range(n))
        self.mid_block = ResnetBlock(w[-1], w[-1], t_dim, cfg.groups)
        self.ups = nn.ModuleList(
            Level(ResnetBlock((w[-1] if i == n - 1 else w[i + 1]) + w[i], w[i], t_dim, cfg.groups),
                  Upsample(w[i]) if i > 0 else None, "upsample") for i in range(n))
        self.final_conv = nn.Conv2d(w[0], cfg.channels, 1)

    def forward(self, x, time):
        emb = self.time_mlp(time)
        h, skips = self.init_conv(x), []
        for level in self.downs:
            h = level.block(h, emb)
            skips.append(h)
            h = level.resample(h)
        h = self.mid_block(h, emb)
        for level in reversed(self.ups):
            h = level.block(torch.cat([h, skips.pop()], dim=1), emb)
            h = level.resample(h)
        return self.final_conv(h)
