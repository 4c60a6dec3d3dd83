"""The ONNX Runtime backend as the registry sees it: a checkpoint's model.onnx, NumPy tensors.

No torch, no mindspore: this is the backend for machines that have neither.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

from backends import Backend, LoadedModel
from diffusion_core.ops import NUMPY

from .runtime import EXPORT_COMMAND, RuntimeOptions, cuda_available, load_onnx_model


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    title = "ONNX Runtime"
    no_bf16_reason = ("its CPU provider has no bf16 convolution (bench/onnx_speed.py --sections precision), "
                      "and float16 ran at 1.01x")
    requires = ("onnxruntime",)

    def __init__(self, options: RuntimeOptions = RuntimeOptions()):
        self.options = options

    def unavailable_reason(self, checkpoint=None, device: Optional[str] = None) -> Optional[str]:
        reason = super().unavailable_reason(checkpoint)
        if reason:
            return reason
        if device is not None and device.startswith("cuda") and not cuda_available():
            return ("this onnxruntime has no CUDA provider; install onnxruntime-gpu or use device "
                    "'cpu'")
        if checkpoint is not None and getattr(checkpoint, "onnx_path", None) is None:
            if getattr(checkpoint, "layout", "toolkit") != "toolkit":
                return (f"this {checkpoint.layout} folder has no model.onnx; convert it into a checkpoint "
                        f"folder with `python -m diffusion_core.convert import {checkpoint.folder} OUT`, "
                        f"then export it with `{EXPORT_COMMAND.replace('<folder>', 'OUT')}`")
            return (f"this checkpoint has no model.onnx; export it with "
                    f"`{EXPORT_COMMAND.replace('<folder>', str(checkpoint.folder))}`")
        return None

    def load(self, checkpoint, device: Optional[str] = None,
             options: Optional[RuntimeOptions] = None) -> LoadedModel:
        """Open checkpoint.onnx_path with `options` (default: this backend's); device overrides
        options.device. Raises runtime.OnnxModelMismatch when the graph does not fit."""
        options = options or self.options
        if device is not None:
            options = replace(options, device=device)
        reason = self.unavailable_reason(checkpoint, options.device)
        if reason:
            from backends import BackendUnavailable
            raise BackendUnavailable(reason)
        model = load_onnx_model(checkpoint.onnx_path, checkpoint.config, checkpoint.weights,
                                options, where=str(checkpoint.onnx_path))
        return LoadedModel(model=model, ops=NUMPY, config=checkpoint.config, backend=self.name,
                           device=model.device)
