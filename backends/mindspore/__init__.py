"""MindSpore backend: the networks, the tensor protocol, the model-contract adapter, trainer, export.

`prepare(device)` must run before MindSpore's first operation: it picks the device and runs that
first operation under ONEDNN_MAX_CPU_ISA=AVX2. build_network, the model adapter, the backend, the
trainer and the benchmark call it; call it yourself before other MindSpore work.
"""
from __future__ import annotations

import os
import sys

ISA_VARIABLE = "ONEDNN_MAX_CPU_ISA"
PINNED_ISA = "AVX2"
DEVICES = {"cpu": "CPU", "gpu": "GPU", "ascend": "Ascend"}  # our spelling -> MindSpore's
_prepared_device: list[str] = []  # the device MindSpore was prepared on, once prepared


def prepare(device: str | None = None, num_threads: int = 0) -> str:
    """Pick MindSpore's device (cpu | gpu | ascend; None: MindSpore's default) and CPU threads
    (0: every usable core but one, backends/threads.py), and run its first operation with the oneDNN ISA pinned; returns the
    device. Later calls only check the device: MindSpore fixes device and threads at its first
    operation, so changing them needs a new process."""
    import mindspore as ms
    if device is not None and device.lower() not in DEVICES:
        raise ValueError(f"MindSpore device must be one of {', '.join(DEVICES)}, got {device!r}")
    if _prepared_device:
        if device is not None and device.lower() != _prepared_device[0]:
            raise ValueError(f"MindSpore already runs on {_prepared_device[0]} in this process and "
                             f"cannot switch to {device!r}; start a new process for that device")
        return _prepared_device[0]
    if device is not None:
        ms.set_device(DEVICES[device.lower()])
    if not num_threads and not os.environ.get("OMP_NUM_THREADS"):
        from ..threads import default_threads
        num_threads = default_threads()  # every usable core but one (backends/threads.py)
    if num_threads > 0:  # threads inside each CPU kernel (runtime_num_threads is the actors')
        ms.device_context.cpu.op_tuning.threads_num(num_threads)
    target = str(ms.get_context("device_target")).lower()
    if target == "cpu":
        pin_onednn_isa()
    _prepared_device.append(target)
    return target


def pin_onednn_isa() -> None:
    """Make MindSpore's bundled oneDNN use AVX2 kernels without slowing PyTorch down.

    On CPUs with AVX-512/AMX, MindSpore 2.10's oneDNN picks a convolution path ~40x slower than
    its AVX2 one (450 ms vs 8-12 ms for a 3x3 conv on 16x32x28x28); ONEDNN_MAX_CPU_ISA=AVX2 fixes
    it. PyTorch's own oneDNN reads the same variable at its first operation and is slower with it.
    Each library reads the variable once, at its first oneDNN primitive, so: let torch (if loaded)
    do its first conv now, set the variable, do MindSpore's first conv, and put the environment
    back, so a torch imported later reads it unset. A value the user set is left alone.
    """
    if os.environ.get(ISA_VARIABLE):
        return
    if "torch" in sys.modules:
        import torch
        # A 3x3 kernel routes torch's conv through oneDNN, which then reads the (unset) variable.
        torch.nn.functional.conv2d(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 3, 3))
    os.environ[ISA_VARIABLE] = PINNED_ISA
    try:
        import numpy as np
        import mindspore as ms
        from mindspore import ops
        ops.conv2d(ms.Tensor(np.zeros((1, 1, 8, 8), np.float32)),
                   ms.Tensor(np.zeros((1, 1, 3, 3), np.float32))).asnumpy()
    finally:
        del os.environ[ISA_VARIABLE]


from .model import (MindSporeDenoiserModel, build_network, load_state_from_numpy,  # noqa: E402
                    state_to_numpy)
from .ops import MindSporeOps  # noqa: E402
from .unet import Unet  # noqa: E402

__all__ = ["MindSporeDenoiserModel", "MindSporeOps", "Unet", "build_network", "load_state_from_numpy",
           "pin_onednn_isa", "prepare", "state_to_numpy"]
