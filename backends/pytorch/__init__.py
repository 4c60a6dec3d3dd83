"""PyTorch backend: the Unet, the tensor protocol and the model-contract adapter."""
from .model import TorchDenoiserModel, build_unet, load_state_from_numpy, state_to_numpy
from .ops import TorchOps
from .unet import Unet

__all__ = ["TorchDenoiserModel", "TorchOps", "Unet", "build_unet", "load_state_from_numpy",
           "state_to_numpy"]
