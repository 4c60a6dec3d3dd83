"""PyTorch backend: the networks, the tensor protocol, the model-contract adapter, the trainer."""
import numpy as _np

# Sampling and training flush denormals to zero (torch.set_flush_denormal), which also applies to
# NumPy in the same thread. NumPy computes its float limits lazily and warns ("smallest subnormal
# ... is zero") when it first does so in that mode: compute them now, in the normal mode.
for _dtype in (_np.float16, _np.float32, _np.float64):
    _np.finfo(_dtype).smallest_subnormal
from .model import TorchDenoiserModel, load_state_from_numpy, state_to_numpy  # noqa: E402
from .ops import TorchOps  # noqa: E402
from .unet import Unet  # noqa: E402

__all__ = ["TorchDenoiserModel", "TorchOps", "Unet", "load_state_from_numpy", "state_to_numpy"]
