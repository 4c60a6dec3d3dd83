"""The built-in backends as the registry declares them (pyproject.toml's entry points name these
objects): a title, the packages each needs, and the class to import only when it is used."""
from . import BackendSpec

PYTORCH = BackendSpec("pytorch", "PyTorch", "backends.pytorch.backend:PyTorchBackend", ("torch",),
                      framework="pytorch")
MINDSPORE = BackendSpec("mindspore", "MindSpore", "backends.mindspore.backend:MindSporeBackend",
                        ("mindspore",), framework="mindspore")
ONNXRUNTIME = BackendSpec("onnxruntime", "ONNX Runtime", "backends.onnx.backend:OnnxRuntimeBackend",
                          ("onnxruntime",), needs_onnx=True)

BUILTIN = {spec.name: spec for spec in (PYTORCH, MINDSPORE, ONNXRUNTIME)}
