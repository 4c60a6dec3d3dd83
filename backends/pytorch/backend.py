"""The PyTorch backend as the registry sees it."""
from __future__ import annotations

from typing import Optional

import torch

from backends import Backend, LoadedModel, build_network

from ..threads import default_threads, user_chose_threads
from .model import TorchDenoiserModel, load_state_from_numpy


_TORCH_DEFAULT_THREADS = torch.get_num_threads()  # what torch picked at import (every core)


def use_default_threads() -> None:
    """backends/threads.py's rule, unless someone chose a thread count (OMP_NUM_THREADS, or
    torch.set_num_threads since torch was imported)."""
    if not user_chose_threads() and torch.get_num_threads() == _TORCH_DEFAULT_THREADS:
        torch.set_num_threads(default_threads())


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class PyTorchBackend(Backend):
    name = "pytorch"
    title = "PyTorch"
    requires = ("torch",)
    framework = "pytorch"

    def unavailable_reason(self, checkpoint=None, device: Optional[str] = None) -> Optional[str]:
        if device is not None and device.startswith("cuda") and not torch.cuda.is_available():
            return "PyTorch sees no CUDA GPU here; use device 'cpu'"
        if device is not None and not (device == "cpu" or device.startswith("cuda")):
            return f"PyTorch runs on 'cpu', 'cuda' or 'cuda:N', not {device!r}"
        return super().unavailable_reason(checkpoint)

    precisions = ("bf16",)
    compiles = True   # load(..., compile=True): torch.compile

    def load(self, checkpoint, device: Optional[str] = None, precision: str = "fp32",
             compile: bool = False) -> LoadedModel:
        use_default_threads()
        config = checkpoint.config
        network = build_network(self.framework, config.network)
        load_state_from_numpy(network, checkpoint.weights)
        model = TorchDenoiserModel(network, config.inputs, device=device or default_device(),
                                   precision=precision, compile=compile)
        return LoadedModel(model=model, ops=model.ops, config=config, backend=self.name,
                           device=str(model.device))
