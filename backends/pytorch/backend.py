"""The PyTorch backend as the registry sees it."""
from __future__ import annotations

from typing import Optional

import torch

from backends import Backend, LoadedModel

from .model import TorchDenoiserModel, build_unet, load_state_from_numpy


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class PyTorchBackend(Backend):
    name = "pytorch"
    title = "PyTorch"
    requires = ("torch",)

    def unavailable_reason(self, checkpoint=None, device: Optional[str] = None) -> Optional[str]:
        if device is not None and device.startswith("cuda") and not torch.cuda.is_available():
            return "PyTorch sees no CUDA GPU here; use device 'cpu'"
        return super().unavailable_reason(checkpoint)

    def load(self, checkpoint, device: Optional[str] = None) -> LoadedModel:
        device = device or default_device()
        unet = build_unet(checkpoint.config.unet)
        load_state_from_numpy(unet, checkpoint.weights)
        model = TorchDenoiserModel(unet, device=device)
        return LoadedModel(model=model, ops=model.ops, config=checkpoint.config, backend=self.name,
                           device=str(model.device))
