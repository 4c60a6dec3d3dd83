"""The test architecture of plain_unet/__init__.py in MindSpore, from the toolkit's own blocks."""
from __future__ import annotations

from mindspore import nn, ops

from backends.mindspore.blocks import Downsample, ResnetBlock, TimeMLP, Upsample, conv2d


class Level(nn.Cell):
    def __init__(self, block, resample, name):
        super().__init__()
        self.block = block
        self.has_resample = resample is not None
        if resample is not None:
            setattr(self, name, resample)
        self.resample_name = name

    def resample(self, h):
        return getattr(self, self.resample_name)(h) if self.has_resample else h


class PlainUnet(nn.Cell):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        t_dim, w, n = 4 * cfg.dim, cfg.widths, len(cfg.dim_mults)
        self.time_mlp = TimeMLP(cfg.dim, t_dim)
        self.init_conv = conv2d(cfg.channels, cfg.dim, 3)
        self.downs = nn.CellList([
            Level(ResnetBlock(cfg.dim if i == 0 else w[i - 1], w[i], t_dim, cfg.groups),
                  Downsample(w[i]) if i < n - 1 else None, "downsample") for i in range(n)])
        self.mid_block = ResnetBlock(w[-1], w[-1], t_dim, cfg.groups)
        self.ups = nn.CellList([
            Level(ResnetBlock((w[-1] if i == n - 1 else w[i + 1]) + w[i], w[i], t_dim, cfg.groups),
                  Upsample(w[i]) if i > 0 else None, "upsample") for i in range(n)])
        self.final_conv = conv2d(w[0], cfg.channels, 1)

    def construct(self, x, time):
        emb = self.time_mlp(time)
        h = self.init_conv(x)
        skips = []
        for level in self.downs:
            h = level.block(h, emb)
            skips.append(h)
            h = level.resample(h)
        h = self.mid_block(h, emb)
        for i in range(len(self.ups) - 1, -1, -1):
            level = self.ups[i]
            h = level.block(ops.cat((h, skips[i]), axis=1), emb)
            h = level.resample(h)
        return self.final_conv(h)
