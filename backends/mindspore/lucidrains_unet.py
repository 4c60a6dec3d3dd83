"""lucidrains' Unet in both weight layouts in MindSpore: backends/pytorch/lucidrains_unet.py, cell
for cell (the map is diffusion_core/architectures/lucidrains_unet.py).

For the v0 layout this is what lvyufeng's denoising-diffusion-mindspore computes, without its
package: it does not import with MindSpore 2.10 (ms_function and ms_class are gone) and, with
aliases for those, its forward still fails (it calls Tensor.split with the 1.x signature); the
tests run it with both shimmed (tests/foreign_packages.py) as the reference. Its weight-
standardised convs arrive here as plain convs, standardised once at conversion
(diffusion_core/convert/mindspore_port.py).
"""
from __future__ import annotations

import math

import numpy as np
import mindspore as ms
from mindspore import nn, ops

from diffusion_core.architectures import LucidrainsUnetV0Config

from .blocks import conv2d


class RMSNorm(nn.Cell):
    """x / max(|x|, 1e-12) over channels * g * sqrt(C), torch.nn.functional.normalize's eps."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = dim ** 0.5
        self.g = ms.Parameter(ms.Tensor(np.ones((1, dim, 1, 1), np.float32)), name="g")

    def construct(self, x):
        norm = ops.sqrt((x * x).sum(axis=1, keepdims=True))
        return x / ops.maximum(norm, 1e-12) * self.g * self.scale


class LayerNorm(nn.Cell):
    """(x - mean) / sqrt(var + 1e-5) * g over channels (the port's LayerNorm)."""

    def __init__(self, dim: int):
        super().__init__()
        self.g = ms.Parameter(ms.Tensor(np.ones((1, dim, 1, 1), np.float32)), name="g")

    def construct(self, x):
        mean = x.mean(axis=1, keep_dims=True)
        centred = x - mean
        var = (centred * centred).mean(axis=1, keep_dims=True)
        return centred * ops.rsqrt(var + 1e-5) * self.g


class SinusoidalPosEmb(nn.Cell):
    def __init__(self, dim: int, theta: int):
        super().__init__()
        half = dim // 2
        # float32 as torch computes it: arange * -(ln(theta) / (half - 1)), then exp
        k = np.arange(half, dtype=np.float32) * np.float32(-(math.log(theta) / (half - 1)))
        self.freqs = ms.Tensor(np.exp(k).reshape(1, -1))

    def construct(self, x):
        args = x.astype(ms.float32).reshape(-1, 1) * self.freqs
        return ops.cat((ops.sin(args), ops.cos(args)), axis=1)


class GELU(nn.Cell):
    def construct(self, x):
        return ops.gelu(x, approximate="none")   # torch.nn.GELU()'s exact erf form


class SiLU(nn.Cell):
    def construct(self, x):
        return ops.silu(x)


class Block(nn.Cell):
    def __init__(self, dim: int, dim_out: int, norm: nn.Cell, dropout: float = 0.0):
        super().__init__()
        self.proj = conv2d(dim, dim_out, 3)
        self.norm = norm
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else None

    def construct(self, x, scale=None, shift=None):
        x = self.norm(self.proj(x))
        if scale is not None:
            x = x * (scale + 1) + shift
        x = ops.silu(x)
        return x if self.dropout is None else self.dropout(x)


class ResnetBlock(nn.Cell):
    def __init__(self, dim: int, dim_out: int, time_dim: int, make_norm, dropout: float = 0.0):
        super().__init__()
        self.dim_out = dim_out
        self.mlp = nn.SequentialCell([SiLU(), nn.Dense(time_dim, 2 * dim_out)])
        self.block1 = Block(dim, dim_out, make_norm(dim_out), dropout)
        self.block2 = Block(dim_out, dim_out, make_norm(dim_out))
        self.res_conv = conv2d(dim, dim_out, 1) if dim != dim_out else None

    def construct(self, x, time_emb):
        scale, shift = ops.split(self.mlp(time_emb).reshape(-1, 2 * self.dim_out, 1, 1), self.dim_out, axis=1)
        h = self.block2(self.block1(x, scale, shift))
        return h + (x if self.res_conv is None else self.res_conv(x))


class AttentionCore(nn.Cell):
    def __init__(self, dim: int, heads: int, dim_head: int, full: bool, num_mem_kv: int, v0: bool):
        super().__init__()
        self.heads, self.dim_head, self.full, self.v0 = heads, dim_head, full, v0
        hidden = heads * dim_head
        self.hidden = hidden
        if not v0:
            shape = (2, heads, num_mem_kv, dim_head) if full else (2, heads, dim_head, num_mem_kv)
            self.mem_kv = ms.Parameter(ms.Tensor(np.random.standard_normal(shape).astype(np.float32)), name="mem_kv")
            self.norm = RMSNorm(dim)
        self.to_qkv = conv2d(dim, 3 * hidden, 1, bias=False)
        if full:
            self.to_out = conv2d(hidden, dim, 1)
        else:
            self.to_out = nn.SequentialCell([conv2d(hidden, dim, 1), LayerNorm(dim) if v0 else RMSNorm(dim)])

    def construct(self, x):
        height, width = x.shape[2], x.shape[3]
        n = height * width
        if not self.v0:
            x = self.norm(x)
        q, k, v = ops.split(self.to_qkv(x).reshape(-1, 3 * self.hidden, n), self.hidden, axis=1)
        shape = (-1, self.heads, self.dim_head, n)
        q, k, v = q.reshape(shape), k.reshape(shape), v.reshape(shape)
        scale = self.dim_head ** -0.5
        if self.full:   # pixels as columns: out[:, i] = sum_j v[:, j] softmax_j(q_i . k_j / sqrt d)
            if not self.v0:
                batch = x.shape[0]
                mk = ops.broadcast_to(self.mem_kv[0].swapaxes(-1, -2).expand_dims(0), (batch, -1, -1, -1))
                mv = ops.broadcast_to(self.mem_kv[1].swapaxes(-1, -2).expand_dims(0), (batch, -1, -1, -1))
                k, v = ops.cat((mk, k), axis=-1), ops.cat((mv, v), axis=-1)
            weights = ops.softmax(ops.matmul(q.swapaxes(-1, -2), k) * scale, axis=-1)   # (B, h, n, keys)
            out = ops.matmul(v, weights.swapaxes(-1, -2))                                  # (B, h, d, n)
        else:
            if not self.v0:
                batch = x.shape[0]
                mk = ops.broadcast_to(self.mem_kv[0].expand_dims(0), (batch, -1, -1, -1))
                mv = ops.broadcast_to(self.mem_kv[1].expand_dims(0), (batch, -1, -1, -1))
                k, v = ops.cat((mk, k), axis=-1), ops.cat((mv, v), axis=-1)
            q = ops.softmax(q, axis=-2) * scale
            k = ops.softmax(k, axis=-1)
            if self.v0:
                v = v / n
            context = ops.matmul(k, v.swapaxes(-1, -2))                                   # (B, h, d, e)
            out = ops.matmul(context.swapaxes(-1, -2), q)                                  # (B, h, e, n)
        return self.to_out(out.reshape(-1, self.hidden, height, width))


class PreNorm(nn.Cell):
    def __init__(self, dim: int, fn: nn.Cell):
        super().__init__()
        self.fn, self.norm = fn, LayerNorm(dim)

    def construct(self, x):
        return self.fn(self.norm(x))


class Residual(nn.Cell):
    """A container keeping the port's `.fn.fn.` names; the Unet adds the input."""

    def __init__(self, fn: nn.Cell):
        super().__init__()
        self.fn = fn

    def construct(self, x):
        return self.fn(x)


class PixelUnshuffle(nn.Cell):
    """'b c (h 2) (w 2) -> b (c 2 2) h w'."""

    def construct(self, x):
        c, height, width = x.shape[1], x.shape[2], x.shape[3]
        x = x.reshape(-1, c, height // 2, 2, width // 2, 2).transpose(0, 1, 3, 5, 2, 4)
        return x.reshape(-1, 4 * c, height // 2, width // 2)


class UpsampleNearest(nn.Cell):
    def construct(self, x):
        return ops.interpolate(x, size=(2 * x.shape[2], 2 * x.shape[3]), mode="nearest")


class LucidrainsUnet(nn.Cell):
    """construct(x, time, [previous x0 estimate]) -> (B, C, H, W) for either config class."""

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        v0 = isinstance(cfg, LucidrainsUnetV0Config)
        self.self_condition = cfg.self_condition
        n, dim = len(cfg.dim_mults), cfg.dim
        init_dim = cfg.init_dim or dim
        dims = [init_dim] + [dim * m for m in cfg.dim_mults]
        pairs, time_dim = list(zip(dims[:-1], dims[1:])), 4 * dim
        full = (False,) * n if v0 else cfg.full_attn
        heads = (cfg.attn_heads,) * n if v0 else cfg.attn_heads
        dim_head = (cfg.attn_dim_head,) * n if v0 else cfg.attn_dim_head
        memory = 0 if v0 else cfg.num_mem_kv

        def make_norm(c):
            return nn.GroupNorm(cfg.resnet_block_groups, c, eps=1e-5) if v0 else RMSNorm(c)

        def resnet(c_in, c_out):
            return ResnetBlock(c_in, c_out, time_dim, make_norm, cfg.dropout)

        def attention(c, level, is_full):
            core = AttentionCore(c, heads[level], dim_head[level], is_full, memory, v0)
            return Residual(PreNorm(c, core)) if v0 else core

        self.init_conv = conv2d(cfg.channels * (2 if cfg.self_condition else 1), init_dim, 7)
        theta = 10000 if v0 else cfg.sinusoidal_pos_emb_theta
        self.time_mlp = nn.SequentialCell([SinusoidalPosEmb(dim, theta), nn.Dense(dim, time_dim), GELU(),
                                           nn.Dense(time_dim, time_dim)])
        downs = []
        for i, (d_in, d_out) in enumerate(pairs):
            if i == n - 1:
                down = conv2d(d_in, d_out, 3)
            elif v0:
                down = nn.Conv2d(d_in, d_out, 4, stride=2, pad_mode="pad", padding=1, has_bias=True)
            else:
                down = nn.SequentialCell([PixelUnshuffle(), conv2d(4 * d_in, d_out, 1)])
            downs.append(nn.CellList([resnet(d_in, d_in), resnet(d_in, d_in), attention(d_in, i, full[i]), down]))
        self.downs = nn.CellList(downs)
        ups = []
        for i, (d_in, d_out) in enumerate(reversed(pairs)):
            level = n - 1 - i
            up = conv2d(d_out, d_in, 3) if i == n - 1 else nn.SequentialCell([UpsampleNearest(), conv2d(d_out, d_in, 3)])
            ups.append(nn.CellList([resnet(d_out + d_in, d_out), resnet(d_out + d_in, d_out),
                                    attention(d_out, level, full[level]), up]))
        self.ups = nn.CellList(ups)
        self.mid_block1 = resnet(dims[-1], dims[-1])
        self.mid_attn = attention(dims[-1], n - 1, True)
        self.mid_block2 = resnet(dims[-1], dims[-1])
        self.final_res_block = resnet(2 * init_dim, init_dim)
        self.final_conv = conv2d(init_dim, cfg.channels, 1)

    def construct(self, x, time, *inputs):
        if self.self_condition:
            x = ops.cat((inputs[0], x), axis=1)
        x = self.init_conv(x)
        r = x
        t = self.time_mlp(time)
        skips = []
        for level in self.downs:
            x = level[0](x, t)
            skips.append(x)
            x = level[1](x, t)
            x = level[2](x) + x
            skips.append(x)
            x = level[3](x)
        x = self.mid_block1(x, t)
        x = self.mid_attn(x) + x
        x = self.mid_block2(x, t)
        last = len(skips) - 1
        for level in self.ups:
            x = level[0](ops.cat((x, skips[last]), axis=1), t)
            x = level[1](ops.cat((x, skips[last - 1]), axis=1), t)
            last -= 2
            x = level[2](x) + x
            x = level[3](x)
        return self.final_conv(self.final_res_block(ops.cat((x, r), axis=1), t))
