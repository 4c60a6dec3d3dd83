"""Building blocks of the PyTorch Unet; diffusion_core/architectures/unet.py describes the same structure.

Only ops that export to ONNX and have a one-to-one MindSpore counterpart: conv2d, linear,
GroupNorm, SiLU, matmul + softmax, reshape/transpose, concat, nearest upsampling (run as the
equal transposed conv, see Upsample).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SinusoidalTimeEmbedding(nn.Module):
    """Transformer position encoding (Vaswani et al. 2017, sec. 3.5) of a float timestep."""

    def __init__(self, dim: int):
        super().__init__()
        self.half = (dim + 1) // 2  # frequencies 10000^(-k/half), k < half; each a sin and a cos

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # (B,) float -> (B, 2*half)
        # Recomputed rather than stored: a buffer would enter state_dict and the canonical names.
        k = torch.arange(self.half, device=t.device, dtype=torch.float32)
        freqs = torch.exp(k * (-math.log(10000.0) / self.half))
        args = t.to(torch.float32)[:, None] * freqs[None, :]
        return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class TimeMLP(nn.Module):
    """sinusoidal(t) -> Linear -> SiLU -> Linear. SiLU, not GELU: MindSpore's GELU defaults to the
    tanh approximation, so GELU would be one more place for the backends to drift apart."""

    def __init__(self, dim: int, time_dim: int):
        super().__init__()
        self.sinusoidal = SinusoidalTimeEmbedding(dim)
        self.linear1 = nn.Linear(2 * self.sinusoidal.half, time_dim)
        self.linear2 = nn.Linear(time_dim, time_dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.linear2(F.silu(self.linear1(self.sinusoidal(t))))


class ResnetBlock(nn.Module):
    """Pre-activation residual block, conditioned on time by a scale and shift of its first norm:
    h = GroupNorm(x) * (scale + 1) + shift (FiLM, Perez et al. 2018; the "scale-shift norm" of
    lucidrains and Dhariwal & Nichol), then SiLU -> conv3x3 -> GroupNorm -> SiLU -> dropout ->
    conv3x3. scale + 1 keeps the block near identity-modulated at initialisation."""

    def __init__(self, c_in: int, c_out: int, time_dim: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.time_proj = nn.Linear(time_dim, 2 * c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.time_proj(F.silu(time_emb))[:, :, None, None].chunk(2, dim=1)
        # (x^ gamma + beta)(scale + 1) + shift with the norm's affine folded into the FiLM's
        # per-(image, channel) factors: one pass over the activations instead of three.
        gain = self.norm1.weight[:, None, None] * (scale + 1)
        bias = self.norm1.bias[:, None, None] * (scale + 1) + shift
        h = torch.addcmul(bias, F.group_norm(x, self.norm1.num_groups, eps=self.norm1.eps), gain)
        h = self.conv1(F.silu(h, inplace=True))
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=True)))
        return h + (x if self.skip is None else self.skip(x))


class _AttentionBase(nn.Module):
    """x + to_out(attention(q, k, v)) with q, k, v from a bias-free 1x1 conv of GroupNorm(x).

    to_qkv's output channels are laid out as (q|k|v, head, dim_head); the result of the heads is
    laid out as (head, dim_head) before to_out. Works for any H x W (7 x 7 included).
    """

    def __init__(self, width: int, heads: int, dim_head: int, groups: int):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.norm = nn.GroupNorm(groups, width)
        self.to_qkv = nn.Conv2d(width, 3 * heads * dim_head, 1, bias=False)
        self.to_out = nn.Conv2d(heads * dim_head, width, 1)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # (B, heads, d, n) x 3 -> (B, heads, d, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, height, width = x.shape
        qkv = self.to_qkv(self.norm(x)).reshape(b, 3, self.heads, self.dim_head, height * width)
        out = self.attend(qkv[:, 0], qkv[:, 1], qkv[:, 2])
        return x + self.to_out(out.reshape(b, self.heads * self.dim_head, height, width))


class Attention(_AttentionBase):
    """Multi-head softmax attention over all pixels, softmax(Q^T K / sqrt(d)) V (Vaswani eq. 1)."""

    def attend(self, q, k, v):
        weights = torch.softmax(torch.matmul(q.transpose(-1, -2), k) * self.dim_head ** -0.5,
                                dim=-1)                        # (B, h, n_query, n_key)
        return torch.matmul(v, weights.transpose(-1, -2))     # out[c, i] = sum_j v[c, j] w[i, j]


class LinearAttention(_AttentionBase):
    """Efficient attention (Shen et al. 2021): softmax of q over features and of k over positions,
    so K V^T is a (d x d) context and the cost is linear in the number of pixels.

    forward computes the same function with the linear maps around the context regrouped, so that
    neither v nor the heads' output is ever formed at full resolution (with x^ = GroupNorm(x), c
    channels, n pixels): K V^T = (K x^T) W_v^T per head, a (d x c) product, and to_out of
    context^T Q is (W_out context^T) Q, one (c x h d) matrix per image applied to softmaxed Q.
    At 28x28 this moves 2 of the 5 full-resolution tensors and ran 2.3x faster (bench/unet_forward.py);
    `attend` is the textbook order the regrouping must equal (tests/test_pytorch_unet.py)."""

    def attend(self, q, k, v):
        q = torch.softmax(q, dim=-2)
        k = torch.softmax(k, dim=-1)
        context = torch.matmul(k, v.transpose(-1, -2))         # (B, h, d_k, d_v)
        return torch.matmul(context.transpose(-1, -2), q)      # (B, h, d_v, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        heads, d = self.heads, self.dim_head
        hidden, n = heads * d, height * width
        xn = self.norm(x).reshape(b, c, n)
        w_q, w_k, w_v = self.to_qkv.weight.reshape(3, hidden, c)
        # bmm on the expanded weight: torch.matmul would fold the batch into a transposed copy
        q = torch.bmm(w_q.expand(b, hidden, c), xn).reshape(b, heads, d, n).softmax(dim=2)
        k = torch.bmm(w_k.expand(b, hidden, c), xn).softmax(dim=-1)             # (b, h d, n)
        kx = torch.matmul(k, xn.transpose(1, 2)).reshape(b, heads, d, c)        # K x^T
        context = torch.matmul(kx, w_v.reshape(heads, d, c).transpose(1, 2))    # (b, h, d_k, d_v)
        w_out = self.to_out.weight.reshape(c, heads, d).transpose(0, 1)         # (h, c, d_v)
        mix = torch.matmul(w_out, context.transpose(-1, -2))                    # (b, h, c, d_k)
        mix = mix.transpose(1, 2).reshape(b, c, hidden)
        out = torch.bmm(mix, q.reshape(b, hidden, n)).reshape(b, c, height, width)
        return x + out + self.to_out.bias[:, None, None]


class Downsample(nn.Conv2d):
    """conv3x3 stride 2: halves H and W; a plain strided conv exports cleanly everywhere.
    A Conv2d subclass so that its weights are named `...downsample.weight`, not `...conv.weight`."""

    def __init__(self, width: int):
        super().__init__(width, width, 3, stride=2, padding=1)


class Upsample(nn.Conv2d):
    """Nearest-neighbour x2 then conv3x3 (avoids the checkerboard of transposed convs, Odena 2016).
    A Conv2d subclass so that its weights are named `...upsample.weight`."""

    def __init__(self, width: int):
        super().__init__(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The same map without the upsampled tensor: a 3x3 conv of a nearest-x2 image is a
        # stride-2 transposed conv of the image whose 4x4 kernel sums the 3x3 taps that land on the
        # same source pixel, axis by axis (_sum_taps; 16 products per source pixel and channel pair
        # instead of 36; 2x faster here). Output pixel 2i reads source rows i-1 (tap 0) and i
        # (taps 1 + 2), pixel 2i+1 rows i (taps 0 + 1) and i+1 (tap 2). It is exactly the nearest +
        # conv map, so it keeps its freedom from checkerboards; only the rounding differs.
        kernel = _sum_taps(_sum_taps(self.weight, 2), 3)                 # (out, in, 4, 4)
        return F.conv_transpose2d(x, kernel.transpose(0, 1), self.bias, stride=2, padding=1)

    def forward_textbook(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _sum_taps(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Along `dim`, the 4 taps of the transposed kernel from the 3 of the conv: tap k (k = y - 2 i + 1
    for output row y, source row i) is w2 (k = 0: output 2i-1 from source i), w1 + w2 (output 2i),
    w0 + w1 (output 2i+1), w0 (output 2i+2). Slices and adds, which export to ONNX as they are."""
    w0, w1, w2 = w.unbind(dim)
    return torch.stack((w2, w1 + w2, w0 + w1, w0), dim=dim)
