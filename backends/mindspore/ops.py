"""The tensor protocol of diffusion_core/ops.py for MindSpore (tensors on MindSpore's device)."""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import ops

from diffusion_core.ops import index_or_float32


class MindSporeOps:
    """Each method is the MindSpore spelling of a NumpyOps method."""

    name = "mindspore"

    def asarray(self, a: np.ndarray) -> ms.Tensor:
        return ms.Tensor(np.ascontiguousarray(a, dtype=index_or_float32(a)))

    def to_numpy(self, x: ms.Tensor) -> np.ndarray:
        return x.astype(ms.float32).asnumpy()

    def clip(self, x: ms.Tensor, lo, hi) -> ms.Tensor:
        if isinstance(lo, ms.Tensor) or isinstance(hi, ms.Tensor):
            # ops.clamp takes two numbers or two tensors, not one of each; min/max broadcast.
            return ops.minimum(ops.maximum(x, lo), hi)
        return ops.clamp(x, float(lo), float(hi))

    def zeros_like(self, x: ms.Tensor) -> ms.Tensor:
        return ops.zeros_like(x)

    def abs_quantile(self, x: ms.Tensor, q: float) -> ms.Tensor:
        # ops.quantile has no CPU kernel in MindSpore 2.10, so sort and interpolate linearly
        # between the order statistics at q * (n - 1), like np.quantile's default method.
        flat = ops.abs(x.reshape(x.shape[0], -1))
        ordered, _ = ops.sort(flat, axis=1)
        n = flat.shape[1]
        position = float(q) * (n - 1)
        below = int(np.floor(position))
        above = min(below + 1, n - 1)
        fraction = position - below
        s = ordered[:, below] * (1.0 - fraction) + ordered[:, above] * fraction
        return s.reshape((-1,) + (1,) * (x.ndim - 1))

    def mean_per_sample(self, x: ms.Tensor) -> ms.Tensor:
        return x.reshape(x.shape[0], -1).mean(axis=1)

    def std_per_sample(self, x: ms.Tensor) -> ms.Tensor:
        flat = x.reshape(x.shape[0], -1)
        centred = flat - flat.mean(axis=1, keep_dims=True)
        std = ops.sqrt((centred * centred).mean(axis=1))  # population std, as NumPy's default
        return std.reshape((-1,) + (1,) * (x.ndim - 1))

    def concat(self, xs: list) -> ms.Tensor:
        return ops.cat(tuple(xs), axis=0)

    def split_batch(self, x: ms.Tensor, n: int) -> tuple[ms.Tensor, ms.Tensor]:
        # ops.split, not slicing: MindSpore 2.10's strided slice is slow on CPU (see blocks.py)
        first, rest = ops.split(x, [n, x.shape[0] - n], axis=0)
        return first, rest
