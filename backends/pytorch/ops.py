"""The tensor protocol of diffusion_core/ops.py for PyTorch, on one device."""
from __future__ import annotations

import numpy as np
import torch

from diffusion_core.ops import index_or_float32


class TorchOps:
    """float32 tensors on `device`; each method is the PyTorch spelling of a NumpyOps method."""

    name = "pytorch"

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)

    def asarray(self, a: np.ndarray) -> torch.Tensor:
        a = np.asarray(a)
        dtype = torch.int64 if index_or_float32(a) is np.int64 else torch.float32
        return torch.as_tensor(a, dtype=dtype, device=self.device)

    def to_numpy(self, x: torch.Tensor) -> np.ndarray:
        return x.detach().to(device="cpu", dtype=torch.float32).numpy()

    def clip(self, x: torch.Tensor, lo, hi) -> torch.Tensor:
        if isinstance(lo, torch.Tensor) or isinstance(hi, torch.Tensor):
            # torch.clamp takes two numbers or two tensors, not one of each; min/max broadcast.
            lo = torch.as_tensor(lo, dtype=x.dtype, device=x.device)
            hi = torch.as_tensor(hi, dtype=x.dtype, device=x.device)
            return torch.minimum(torch.maximum(x, lo), hi)
        return torch.clamp(x, float(lo), float(hi))

    def zeros_like(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def abs_quantile(self, x: torch.Tensor, q: float) -> torch.Tensor:
        # Linear interpolation between order statistics, like np.quantile's default.
        s = torch.quantile(x.abs().reshape(x.shape[0], -1), q, dim=1)
        return s.reshape((-1,) + (1,) * (x.ndim - 1))

    def mean_per_sample(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1).mean(dim=1)

    def std_per_sample(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1).std(dim=1, correction=0).reshape((-1,) + (1,) * (x.ndim - 1))

    def concat(self, xs: list) -> torch.Tensor:
        return torch.cat(list(xs), dim=0)

    def split_batch(self, x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return x[:n], x[n:]
