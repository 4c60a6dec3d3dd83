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
    try:
        import torchvision  # noqa: F401
    except Exception:  # not installed, or installed but broken beside this torch
        stub = types.ModuleType("torchvision")
        stub.transforms, stub.utils = types.ModuleType("torchvision.transforms"), types.ModuleType("torchvision.utils")
        sys.modules.update({"torchvision": stub, "torchvision.transforms": stub.transforms,
                            "torchvision.utils": stub.utils})
    return pytest.importorskip("denoising_diffusion_pytorch",
                               reason="the lucidrains tests build checkpoints with denoising-diffusion-pytorch "
                                      "(requirements-foreign.txt, installed with --no-deps)")


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
