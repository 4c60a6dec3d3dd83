"""The tensor protocol: the few operations the core needs from a framework beyond arithmetic.

Samplers multiply backend tensors by Python floats and add them together; every framework's
operators already do that. What they cannot spell with operators is listed in `Ops`. A backend
implements these methods (each is one line in PyTorch or MindSpore); `NumpyOps` is the reference
and is what the ONNX Runtime backend uses.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

Tensor = Any  # a backend's array type: np.ndarray, torch.Tensor, mindspore.Tensor, ...


def index_or_float32(a: np.ndarray) -> type:
    """The dtype a backend tensor of `a` gets: int64 for integer arrays, float32 for the rest."""
    return np.int64 if np.issubdtype(np.asarray(a).dtype, np.integer) else np.float32


class Ops(Protocol):
    name: str

    def asarray(self, a: np.ndarray) -> Tensor:
        """NumPy array -> backend tensor on the backend's device: floating arrays become float32
        (noise, coefficients), integer arrays int64 (class labels)."""

    def to_numpy(self, x: Tensor) -> np.ndarray:
        """Backend tensor -> float32 NumPy array (final images, previews)."""

    def clip(self, x: Tensor, lo: float | Tensor, hi: float | Tensor) -> Tensor:
        """Element-wise clamp; lo/hi may be floats or tensors that broadcast against x."""

    def zeros_like(self, x: Tensor) -> Tensor:
        ...

    def abs_quantile(self, x: Tensor, q: float) -> Tensor:
        """Per-sample q-quantile of |x| over all but the first axis, shaped (B, 1, ..., 1)."""

    def mean_per_sample(self, x: Tensor) -> Tensor:
        """Mean over all but the first axis, shaped (B,) (per-sample losses)."""

    def std_per_sample(self, x: Tensor) -> Tensor:
        """Standard deviation over all but the first axis, shaped (B, 1, ..., 1) (guidance rescale)."""

    def concat(self, xs: list) -> Tensor:
        """Join tensors along the batch axis (the two halves of a guided forward)."""

    def split_batch(self, x: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """(x[:n], x[n:]) along the batch axis."""


class NumpyOps:
    """Reference implementation; float32 throughout, like the other backends."""

    name = "numpy"

    def asarray(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(a, dtype=index_or_float32(a))

    def to_numpy(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float32)

    def clip(self, x, lo, hi):
        return np.clip(x, lo, hi).astype(x.dtype, copy=False)

    def zeros_like(self, x):
        return np.zeros_like(x)

    def abs_quantile(self, x, q):
        flat = np.abs(x.reshape(x.shape[0], -1))
        s = np.quantile(flat, q, axis=1).astype(x.dtype)
        return s.reshape((-1,) + (1,) * (x.ndim - 1))

    def mean_per_sample(self, x):
        return x.reshape(x.shape[0], -1).mean(axis=1)

    def std_per_sample(self, x):
        return x.reshape(x.shape[0], -1).std(axis=1).reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)

    def concat(self, xs):
        return np.concatenate(xs, axis=0)

    def split_batch(self, x, n):
        return x[:n], x[n:]


NUMPY = NumpyOps()
