"""Building blocks of the MindSpore Unet: the maths of backends/pytorch/blocks.py, cell for cell.

Cell attribute names are the canonical module names of diffusion_core/architectures/unet.py; parameter
names follow MindSpore's own habits (GroupNorm gamma/beta) and names.py maps them to the canonical
checkpoint names.

Two ops have an "export-friendly" spelling because MindSpore 2.10's ONNX exporter has no GroupNorm
and no nearest-neighbour resize: GroupNorm from reshape/mean/sqrt and the x2 upsample from
stack + reshape. `decomposed = True` on a cell picks that spelling; tests check both are equal.
Every reshape keeps the batch as -1 so that an exported graph keeps a variable batch.
"""
from __future__ import annotations

import math

import numpy as np
import mindspore as ms
from mindspore import nn, ops


def conv2d(c_in: int, c_out: int, kernel: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    """A conv padded like PyTorch's `padding=kernel // 2` (MindSpore's default pad_mode is 'same')."""
    return nn.Conv2d(c_in, c_out, kernel, stride=stride, pad_mode="pad", padding=kernel // 2,
                     has_bias=bias)


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm (parameters gamma, beta; eps 1e-5 like PyTorch) with an exportable spelling."""

    def __init__(self, groups: int, channels: int):
        super().__init__(groups, channels, eps=1e-5)
        self.groups, self.channels = groups, channels
        self.decomposed = False

    def construct(self, x):
        if not self.decomposed:
            return ops.group_norm(x, self.groups, self.gamma, self.beta, 1e-5)
        height, width = x.shape[2], x.shape[3]
        g = x.reshape(-1, self.groups, (self.channels // self.groups) * height * width)
        mean = g.mean(axis=-1, keep_dims=True)
        centred = g - mean
        variance = (centred * centred).mean(axis=-1, keep_dims=True)  # biased, like PyTorch
        g = centred / ops.sqrt(variance + 1e-5)
        return (g.reshape(-1, self.channels, height, width) * self.gamma.reshape(1, -1, 1, 1)
                + self.beta.reshape(1, -1, 1, 1))


class SinusoidalTimeEmbedding(nn.Cell):
    """Transformer position encoding (Vaswani et al. 2017, sec. 3.5) of a float timestep."""

    def __init__(self, dim: int):
        super().__init__()
        self.half = (dim + 1) // 2
        # A constant tensor, not a Parameter: it must not appear among the weights. float32 as
        # PyTorch computes it: exp(k * (-ln(10000) / half)).
        k = np.arange(self.half, dtype=np.float32)
        self.freqs = ms.Tensor(np.exp(k * np.float32(-math.log(10000.0) / self.half)).reshape(1, -1))

    def construct(self, t):  # (B,) float -> (B, 2*half)
        args = t.astype(ms.float32).reshape(-1, 1) * self.freqs
        return ops.cat((ops.sin(args), ops.cos(args)), axis=1)


class TimeMLP(nn.Cell):
    """sinusoidal(t) -> Dense -> SiLU -> Dense."""

    def __init__(self, dim: int, time_dim: int):
        super().__init__()
        self.sinusoidal = SinusoidalTimeEmbedding(dim)
        self.linear1 = nn.Dense(2 * self.sinusoidal.half, time_dim)
        self.linear2 = nn.Dense(time_dim, time_dim)

    def construct(self, t):
        return self.linear2(ops.silu(self.linear1(self.sinusoidal(t))))


class ResnetBlock(nn.Cell):
    """h = GroupNorm(x) * (scale + 1) + shift (FiLM from the time embedding), then
    SiLU -> conv3x3 -> GroupNorm -> SiLU -> dropout -> conv3x3, plus the (1x1-projected) input."""

    def __init__(self, c_in: int, c_out: int, time_dim: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.c_in = c_in
        self.norm1 = GroupNorm(groups, c_in)
        self.time_proj = nn.Dense(time_dim, 2 * c_in)
        self.conv1 = conv2d(c_in, c_out, 3)
        self.norm2 = GroupNorm(groups, c_out)
        # No Dropout cell at p = 0: it would draw from MindSpore's generator for nothing.
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else None
        self.conv2 = conv2d(c_out, c_out, 3)
        self.skip = conv2d(c_in, c_out, 1) if c_in != c_out else None

    def construct(self, x, time_emb):
        film = self.time_proj(ops.silu(time_emb)).reshape(-1, 2 * self.c_in, 1, 1)
        # torch's chunk(2, dim=1). ops.split, not slicing: MindSpore 2.10's strided slice on CPU
        # is slow (30 ms for one q of the linear attention on a 16x28x28 batch).
        scale, shift = ops.split(film, self.c_in, axis=1)
        h = self.norm1(x) * (scale + 1) + shift
        h = self.conv1(ops.silu(h))
        h = ops.silu(self.norm2(h))
        if self.dropout is not None:
            h = self.dropout(h)
        h = self.conv2(h)
        if self.skip is None:
            return h + x
        return h + self.skip(x)


class AttentionBase(nn.Cell):
    """x + to_out(attend(q, k, v)), q, k, v from a bias-free 1x1 conv of GroupNorm(x); channels of
    to_qkv laid out as (q|k|v, head, dim_head), heads' result as (head, dim_head)."""

    def __init__(self, width: int, heads: int, dim_head: int, groups: int):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.norm = GroupNorm(groups, width)
        self.to_qkv = conv2d(width, 3 * heads * dim_head, 1, bias=False)
        self.to_out = conv2d(heads * dim_head, width, 1)

    def attend(self, q, k, v):
        raise NotImplementedError  # (B, heads, d, n) x 3 -> (B, heads, d, n)

    def construct(self, x):
        height, width = x.shape[2], x.shape[3]
        hidden, n = self.heads * self.dim_head, height * width
        # split, not qkv[:, 0]: a strided slice of a 5-D tensor costs ~30x a split here.
        q, k, v = ops.split(self.to_qkv(self.norm(x)).reshape(-1, 3 * hidden, n), hidden, axis=1)
        shape = (-1, self.heads, self.dim_head, n)
        out = self.attend(q.reshape(shape), k.reshape(shape), v.reshape(shape))
        return x + self.to_out(out.reshape(-1, self.heads * self.dim_head, height, width))


class Attention(AttentionBase):
    """Multi-head softmax attention over all pixels, softmax(Q^T K / sqrt(d)) V (Vaswani eq. 1)."""

    def attend(self, q, k, v):
        # The scale goes on q (n x d) rather than on the (n x n) scores: fewer multiplies.
        scores = ops.matmul(q.swapaxes(-1, -2) * (self.dim_head ** -0.5), k)  # (B, h, n_q, n_k)
        weights = ops.softmax(scores, axis=-1)
        return ops.matmul(v, weights.swapaxes(-1, -2))     # out[c, i] = sum_j v[c, j] w[i, j]


class LinearAttention(AttentionBase):
    """Efficient attention (Shen et al. 2021): softmax of q over features, of k over positions;
    K V^T is a (d x d) context, so the cost is linear in the number of pixels."""

    def attend(self, q, k, v):
        q = ops.softmax(q, axis=-2)
        k = ops.softmax(k, axis=-1)
        context = ops.matmul(k, v.swapaxes(-1, -2))        # (B, h, d_k, d_v)
        return ops.matmul(context.swapaxes(-1, -2), q)     # (B, h, d_v, n)

    def construct(self, x):
        # The regrouping of the PyTorch LinearAttention.forward (its docstring has the algebra):
        # v and the heads' output are never formed at full resolution.
        channels, height, width = x.shape[1], x.shape[2], x.shape[3]
        heads, d = self.heads, self.dim_head
        hidden, n = heads * d, height * width
        xn = self.norm(x).reshape(-1, channels, n)
        # the weights in the dtype of the activations: float16 training casts cells, not raw weights
        dtype = xn.dtype
        w_q, w_k, w_v = ops.split(self.to_qkv.weight.astype(dtype).reshape(3 * hidden, channels), hidden,
                                  axis=0)
        q = ops.softmax(ops.matmul(w_q, xn).reshape(-1, heads, d, n), axis=2)
        k = ops.softmax(ops.matmul(w_k, xn), axis=-1)                           # (b, h d, n)
        kx = ops.matmul(k, xn.swapaxes(1, 2)).reshape(-1, heads, d, channels)   # K x^T
        context = ops.matmul(kx, w_v.reshape(heads, d, channels).swapaxes(1, 2))
        w_out = self.to_out.weight.astype(dtype).reshape(channels, heads, d).swapaxes(0, 1)  # (h, c, d_v)
        mix = ops.matmul(w_out, context.swapaxes(-1, -2)).swapaxes(1, 2).reshape(-1, channels, hidden)
        out = ops.matmul(mix, q.reshape(-1, hidden, n)).reshape(-1, channels, height, width)
        return x + out + self.to_out.bias.astype(dtype).reshape(1, channels, 1, 1)


class Downsample(nn.Conv2d):
    """conv3x3 stride 2; a Conv2d subclass so that its weights are `...downsample.weight`."""

    def __init__(self, width: int):
        super().__init__(width, width, 3, stride=2, pad_mode="pad", padding=1, has_bias=True)


class Upsample(nn.Conv2d):
    """Nearest-neighbour x2, then conv3x3; a Conv2d subclass so its weights are `...upsample.*`."""

    def __init__(self, width: int):
        super().__init__(width, width, 3, stride=1, pad_mode="pad", padding=1, has_bias=True)
        self.width = width
        self.decomposed = False

    def construct(self, x):
        height, width = x.shape[2], x.shape[3]
        if self.decomposed:
            # Each pixel repeated along a new last axis, then along a new row axis:
            # (B,C,H,W) -> (B,C,H,W,2) -> (B,C,H,2W) -> (B,C,H,2,2W) -> (B,C,2H,2W).
            x = ops.stack((x, x), axis=-1).reshape(-1, self.width, height, 2 * width)
            x = ops.stack((x, x), axis=3).reshape(-1, self.width, 2 * height, 2 * width)
        else:
            # size=, not scale_factor=: MindSpore 2.10 refuses scale_factor with mode "nearest" on
            # 4-D input.
            x = ops.interpolate(x, size=(2 * height, 2 * width), mode="nearest")
        return super().construct(x)
