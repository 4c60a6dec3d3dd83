"""ONNX backend: export (export.py, needs torch) and ONNX Runtime inference (runtime.py, backend.py,
NumPy tensors, no torch or mindspore needed).

Importing this package imports neither torch nor onnxruntime; export.py is imported on its own
(`python -m backends.onnx.export <folder>`).
"""
from __future__ import annotations

_RUNTIME_NAMES = ("OnnxDenoiserModel", "OnnxModelMismatch", "RuntimeOptions", "load_onnx_model",
                  "weights_fingerprint")


def __getattr__(name: str):
    # Lazy, like the backend registry: `import backends.onnx` must stay cheap and framework-free.
    if name in _RUNTIME_NAMES:
        from . import runtime
        return getattr(runtime, name)
    if name == "OnnxRuntimeBackend":
        from .backend import OnnxRuntimeBackend
        return OnnxRuntimeBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_RUNTIME_NAMES) + ["OnnxRuntimeBackend"]
