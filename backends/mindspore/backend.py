"""The MindSpore backend as the registry sees it."""
from __future__ import annotations

from typing import Optional

from backends import Backend, LoadedModel

from . import DEVICES, prepare
from .model import MindSporeDenoiserModel, build_network, load_state_from_numpy


class MindSporeBackend(Backend):
    name = "mindspore"
    title = "MindSpore"
    requires = ("mindspore",)
    framework = "mindspore"

    def unavailable_reason(self, checkpoint=None, device: Optional[str] = None) -> Optional[str]:
        if device is not None and device.lower() not in DEVICES:
            return f"MindSpore runs on {', '.join(DEVICES)}, not {device!r}"
        return super().unavailable_reason(checkpoint)

    def load(self, checkpoint, device: Optional[str] = None) -> LoadedModel:
        """device: cpu | gpu | ascend, or None for MindSpore's default. MindSpore fixes its device
        at its first operation, so one process serves one device."""
        target = prepare(device)
        config = checkpoint.config
        network = build_network(config.network)
        load_state_from_numpy(network, checkpoint.weights)
        model = MindSporeDenoiserModel(network, config.inputs)
        return LoadedModel(model=model, ops=model.ops, config=config, backend=self.name,
                           device=target)
