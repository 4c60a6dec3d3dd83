"""Test helper: import the foreign packages whose checkpoints the tests build, or skip with a reason.

denoising-diffusion-pytorch imports torchvision at import time, only for its dataset transforms
and image saving, which the tests never use; PyPI's torchvision does not import beside this
torch, so when `import torchvision` fails the package gets three empty stand-in modules.
"""
from __future__ import annotations

import sys
import types

import pytest


def lucidrains():
    """The denoising_diffusion_pytorch module (Unet, GaussianDiffusion, Trainer)."""
    if "denoising_diffusion_pytorch" in sys.modules:
        return sys.modules["denoising_diffusion_pytorch"]
    stubbed = []
    try:
        import torchvision  # noqa: F401
    except Exception:  # not installed, or installed but broken beside this torch
        stub = types.ModuleType("torchvision")
        stub.transforms, stub.utils = types.ModuleType("torchvision.transforms"), types.ModuleType("torchvision.utils")
        stubbed = {"torchvision": stub, "torchvision.transforms": stub.transforms, "torchvision.utils": stub.utils}
        sys.modules.update(stubbed)
    try:
        return pytest.importorskip("denoising_diffusion_pytorch",
                                   reason="the lucidrains tests build checkpoints with denoising-diffusion-pytorch "
                                          "(requirements-foreign.txt, installed with --no-deps)")
    finally:  # their module keeps its references; nobody else may see the stand-ins (diffusers looks)
        for name in stubbed:
            sys.modules.pop(name, None)


def save_milestone(diffusion, folder, milestone: int, step: int = 7):
    """A results/model-N.pt written by their Trainer.save itself, on a minimal trainer: the
    accelerator, an EMA (updated once, so it differs from the raw weights) and an Adam optimiser."""
    import torch
    from accelerate import Accelerator
    from ema_pytorch import EMA

    Trainer = lucidrains().Trainer
    accelerator = Accelerator(split_batches=True, mixed_precision="no", cpu=True)
    optimiser = torch.optim.Adam(diffusion.parameters(), lr=1e-4)
    ema = EMA(diffusion, beta=0.9, update_every=1, update_after_step=0)
    ema.update()
    with torch.no_grad():   # training goes on: the raw weights move away from the EMA copy
        for p in diffusion.parameters():
            p.add_(0.01 * torch.randn_like(p))
    trainer = types.SimpleNamespace(accelerator=accelerator, model=accelerator.prepare(diffusion), opt=optimiser,
                                    ema=ema, step=step, results_folder=folder)
    Trainer.save(trainer, milestone)
    return folder / f"model-{milestone}.pt"


def mindspore_port():
    """The `ddm` package of denoising-diffusion-mindspore 0.0.1a0, importable on MindSpore 2.10.

    It imports `mindspore.ms_function` and `mindspore.ms_class`, which MindSpore 2.x renamed to
    jit and jit_class: the old names are added as aliases (additions only; nothing else changes).
    Its forward also needs `old_tensor_split` around each call.
    """
    ms = pytest.importorskip("mindspore", reason="the MindSpore port needs mindspore")
    for old, new in (("ms_function", "jit"), ("ms_class", "jit_class")):
        if not hasattr(ms, old):
            setattr(ms, old, getattr(ms, new))
    return pytest.importorskip("ddm", reason="the MindSpore-port tests run denoising-diffusion-mindspore "
                                             "(requirements-foreign.txt, installed with --no-deps)")


class old_tensor_split:
    """Within the block, Tensor.split(axis, output_num) as MindSpore 1.x had it (ddm calls
    `time_emb.split(axis=1, output_num=2)` and `qkv.split(1, 3)`); restored on exit."""

    def __enter__(self):
        import mindspore as ms
        from mindspore import ops
        self.saved = ms.Tensor.split
        ms.Tensor.split = lambda t, axis=0, output_num=1: ops.split(t, t.shape[axis] // output_num, axis)

    def __exit__(self, *exc):
        import mindspore as ms
        ms.Tensor.split = self.saved
