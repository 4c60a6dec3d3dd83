"""lucidrains' denoising-diffusion-pytorch Unet, both weight layouts, written for this toolkit.

The maths of denoising_diffusion_pytorch 2.3.4 (`lucidrains_unet`) and of the MindSpore port's
Unet (`lucidrains_unet_v0`), module for module, so state_dict names are the architecture entry's
canonical names (diffusion_core/architectures/lucidrains_unet.py has the map). Not their package:
it imports torchvision at import time, and a converted checkpoint should not need it. The tests
compare this network with their package's forward.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from diffusion_core.architectures import LucidrainsUnetV0Config


class RMSNorm(nn.Module):
    """x / |x| over channels * g * sqrt(C) (lucidrains 2.x)."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = dim ** 0.5
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))

    def forward(self, x):
        return F.normalize(x, dim=1) * self.g * self.scale


class LayerNorm(nn.Module):
    """(x - mean) / sqrt(var + 1e-5) * g over channels, no bias (the port's PreNorm and to_out)."""

    def __init__(self, dim: int):
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))

    def forward(self, x):
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return (x - mean) * torch.rsqrt(var + 1e-5) * self.g


class SinusoidalPosEmb(nn.Module):
    """[sin(t f), cos(t f)], f_k = theta^(-k / (half - 1))."""

    def __init__(self, dim: int, theta: int = 10000):
        super().__init__()
        self.dim, self.theta = dim, theta

    def forward(self, x):
        half = self.dim // 2
        emb = torch.exp(torch.arange(half, device=x.device) * -(math.log(self.theta) / (half - 1)))
        emb = x[:, None] * emb[None, :]
        return torch.cat((emb.sin(), emb.cos()), dim=-1)


class Block(nn.Module):
    def __init__(self, dim: int, dim_out: int, norm: nn.Module, dropout: float = 0.0):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim_out, 3, padding=1)
        self.norm = norm
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, scale_shift=None):
        x = self.norm(self.proj(x))
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return self.dropout(F.silu(x))


class ResnetBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, time_dim: int, make_norm, dropout: float = 0.0):
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * dim_out))
        self.block1 = Block(dim, dim_out, make_norm(dim_out), dropout)
        self.block2 = Block(dim_out, dim_out, make_norm(dim_out))
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x, time_emb):
        scale_shift = self.mlp(time_emb)[:, :, None, None].chunk(2, dim=1)
        return self.block2(self.block1(x, scale_shift)) + self.res_conv(x)


class AttentionCore(nn.Module):
    """q, k, v from a bias-free 1x1 conv (channels (q|k|v, head, d)); 2.x also normalises the input
    and prepends learned memory key/values; the port's input comes normalised by PreNorm."""

    def __init__(self, dim: int, heads: int, dim_head: int, full: bool, num_mem_kv: int, v0: bool):
        super().__init__()
        self.heads, self.dim_head, self.full, self.v0 = heads, dim_head, full, v0
        hidden = heads * dim_head
        if not v0:
            shape = (2, heads, num_mem_kv, dim_head) if full else (2, heads, dim_head, num_mem_kv)
            self.mem_kv = nn.Parameter(torch.randn(*shape))
            self.norm = RMSNorm(dim)
        self.to_qkv = nn.Conv2d(dim, 3 * hidden, 1, bias=False)
        if full:
            self.to_out = nn.Conv2d(hidden, dim, 1)
        else:
            self.to_out = nn.Sequential(nn.Conv2d(hidden, dim, 1), LayerNorm(dim) if v0 else RMSNorm(dim))

    def forward(self, x):
        b, _, h, w = x.shape
        if not self.v0:
            x = self.norm(x)
        q, k, v = (t.reshape(b, self.heads, self.dim_head, h * w) for t in self.to_qkv(x).chunk(3, dim=1))
        scale = self.dim_head ** -0.5
        if self.full:                              # (b, heads, n, d); softmax(q k^T / sqrt d) v
            q, k, v = q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2)
            if not self.v0:
                mk, mv = (m.expand(b, -1, -1, -1) for m in self.mem_kv)
                k, v = torch.cat((mk, k), dim=-2), torch.cat((mv, v), dim=-2)
            attn = (q @ k.transpose(-1, -2) * scale).softmax(dim=-1)
            out = (attn @ v).transpose(-1, -2)    # (b, heads, d, n)
        else:                                      # Shen et al.: softmax over features / positions
            if not self.v0:
                mk, mv = (m.expand(b, -1, -1, -1) for m in self.mem_kv)
                k, v = torch.cat((mk, k), dim=-1), torch.cat((mv, v), dim=-1)
            q = q.softmax(dim=-2) * scale
            k = k.softmax(dim=-1)
            if self.v0:
                v = v / (h * w)
            out = (k @ v.transpose(-1, -2)).transpose(-1, -2) @ q   # context^T q: (b, heads, e, n)
        return self.to_out(out.reshape(b, self.heads * self.dim_head, h, w))


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.fn, self.norm = fn, LayerNorm(dim)

    def forward(self, x):
        return self.fn(self.norm(x))


class Residual(nn.Module):
    """The port's attention wrapper; the Unet adds the input for both layouts, so this is a plain
    container that keeps the `.fn.fn.` / `.fn.norm.` names."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class LucidrainsUnet(nn.Module):
    """forward(x, time, [previous x0 estimate]) -> (B, C, H, W) for either config class."""

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        v0 = isinstance(cfg, LucidrainsUnetV0Config)
        n, dim = len(cfg.dim_mults), cfg.dim
        init_dim = cfg.init_dim or dim
        dims = [init_dim] + [dim * m for m in cfg.dim_mults]
        pairs, time_dim = list(zip(dims[:-1], dims[1:])), 4 * dim
        full = (False,) * n if v0 else cfg.full_attn
        heads = (cfg.attn_heads,) * n if v0 else cfg.attn_heads
        dim_head = (cfg.attn_dim_head,) * n if v0 else cfg.attn_dim_head
        memory = 0 if v0 else cfg.num_mem_kv

        def make_norm(c):
            return nn.GroupNorm(cfg.resnet_block_groups, c) if v0 else RMSNorm(c)

        def resnet(c_in, c_out):
            return ResnetBlock(c_in, c_out, time_dim, make_norm, cfg.dropout)

        def attention(c, level, is_full):
            core = AttentionCore(c, heads[level], dim_head[level], is_full, memory, v0)
            return Residual(PreNorm(c, core)) if v0 else core

        self.init_conv = nn.Conv2d(cfg.channels * (2 if cfg.self_condition else 1), init_dim, 7, padding=3)
        theta = 10000 if v0 else cfg.sinusoidal_pos_emb_theta
        self.time_mlp = nn.Sequential(SinusoidalPosEmb(dim, theta), nn.Linear(dim, time_dim), nn.GELU(),
                                      nn.Linear(time_dim, time_dim))
        self.downs = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(pairs):
            if i == n - 1:
                down = nn.Conv2d(d_in, d_out, 3, padding=1)
            elif v0:
                down = nn.Conv2d(d_in, d_out, 4, 2, 1)
            else:  # einops' 'b c (h p1) (w p2) -> b (c p1 p2) h w' is pixel unshuffle
                down = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(4 * d_in, d_out, 1))
            self.downs.append(nn.ModuleList([resnet(d_in, d_in), resnet(d_in, d_in),
                                             attention(d_in, i, full[i]), down]))
        self.ups = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(reversed(pairs)):
            level = n - 1 - i
            up = (nn.Conv2d(d_out, d_in, 3, padding=1) if i == n - 1 else
                  nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(d_out, d_in, 3, padding=1)))
            self.ups.append(nn.ModuleList([resnet(d_out + d_in, d_out), resnet(d_out + d_in, d_out),
                                           attention(d_out, level, full[level]), up]))
        self.mid_block1 = resnet(dims[-1], dims[-1])
        self.mid_attn = attention(dims[-1], n - 1, True)
        self.mid_block2 = resnet(dims[-1], dims[-1])
        self.final_res_block = resnet(2 * init_dim, init_dim)
        self.final_conv = nn.Conv2d(init_dim, cfg.channels, 1)

    def forward(self, x, time, *inputs):
        if self.config.self_condition:   # the only optional input: the previous x0 estimate, first
            x = torch.cat((inputs[0], x), dim=1)
        x = self.init_conv(x)
        r = x
        t = self.time_mlp(time)
        skips = []
        for block1, block2, attn, downsample in self.downs:
            x = block1(x, t)
            skips.append(x)
            x = block2(x, t)
            x = attn(x) + x
            skips.append(x)
            x = downsample(x)
        x = self.mid_block1(x, t)
        x = self.mid_attn(x) + x
        x = self.mid_block2(x, t)
        for block1, block2, attn, upsample in self.ups:
            x = block1(torch.cat((x, skips.pop()), dim=1), t)
            x = block2(torch.cat((x, skips.pop()), dim=1), t)
            x = attn(x) + x
            x = upsample(x)
        return self.final_conv(self.final_res_block(torch.cat((x, r), dim=1), t))
