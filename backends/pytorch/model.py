"""The PyTorch side of the model contract: model(x, t, **inputs) -> raw output.

Also the canonical-weights bridge: float32 NumPy arrays under the module's parameter names, checked
strictly, so that checkpoints move between backends through diffusion_core/checkpoint.py.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from diffusion_core.architectures import ModelInput, complete_inputs, declared_inputs

from .ops import TorchOps


def state_to_numpy(module: nn.Module) -> dict[str, np.ndarray]:
    """Canonical weights: parameter name -> float32 array (a copy), in state_dict order."""
    return {name: p.detach().to(device="cpu", dtype=torch.float32).numpy().copy()
            for name, p in module.named_parameters()}


def load_state_from_numpy(module: nn.Module, state: dict[str, np.ndarray]) -> None:
    """Copy canonical float32 weights into module; every name must match in name and shape.

    Raises ValueError listing the missing, unexpected and misshaped names; nothing is copied then.
    """
    params = dict(module.named_parameters())
    missing = [n for n in params if n not in state]
    unexpected = [n for n in state if n not in params]
    misshaped = [f"{n}: checkpoint {tuple(np.shape(state[n]))}, model {tuple(p.shape)}"
                 for n, p in params.items()
                 if n in state and tuple(np.shape(state[n])) != tuple(p.shape)]
    if missing or unexpected or misshaped:
        problems = [f"{label} ({len(names)}): {', '.join(names)}"
                    for label, names in (("missing", missing), ("unexpected", unexpected),
                                         ("misshaped", misshaped)) if names]
        raise ValueError("weights do not fit this model; " + "; ".join(problems)
                         + ". Check that the checkpoint's config.json matches the model's config")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(torch.as_tensor(np.asarray(state[name], dtype=np.float32)))


class TorchDenoiserModel:
    """A network behind the model contract: `model(x, t, **inputs)` -> raw output (B, C, H, W).

    x is a float32 tensor on `device` (from `self.ops.asarray`), t a Python float timestep in
    [0, T-1], possibly fractional (Euler / Heun interpolate), the same for the whole batch;
    inputs are the optional inputs `declared` names, as tensors, and those not given get their
    declared defaults. The network takes them positionally in declaration order. Stateless
    between calls, so one instance can serve concurrent requests.
    """

    def __init__(self, network: nn.Module, declared: Optional[Sequence[ModelInput]] = None,
                 device: str | torch.device = "cpu", precision: str = "fp32", compile: bool = False):
        """declared: the network's inputs; by default those its config's architecture declares.
        precision "bf16": the forward runs under autocast (matmuls and convolutions in bf16, the
        sampler's arithmetic and the returned output in float32)."""
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        self.precision = precision
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()  # eval: dropout off
        # compile: the same module through torch.compile (bench/unet_forward.py measures it)
        self.forward = torch.compile(self.network) if compile else self.network
        self.declared = tuple(declared if declared is not None else declared_inputs(network))
        self.ops = TorchOps(self.device)

    def __call__(self, x: torch.Tensor, t: float, **inputs: torch.Tensor) -> torch.Tensor:
        # Denormal floats make CPU kernels 5-20x slower late in sampling. The flag lives in the
        # calling thread's FPU state (and Gradio calls from worker threads), so set it every call.
        torch.set_flush_denormal(True)
        with torch.inference_mode():
            extra = complete_inputs(self.declared, inputs, x.shape[0], self.ops)
            time = torch.full((x.shape[0],), float(t), dtype=torch.float32, device=x.device)
            if self.precision == "fp32":
                return self.forward(x, time, *extra)
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return self.forward(x, time, *extra).float()
