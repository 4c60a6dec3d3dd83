"""The PyTorch optimizer's state as the run's checkpoint stores it (the file: diffusion_core/training/state.py).

    <out>/training_state.safetensors
        tensors   model.<name>, ema.<name>            float32 weights (canonical names)
                  optimizer.<param index>.<key>       AdamW moments and step counts
                  rng.torch_cpu.<rank>, rng.torch_cuda.<rank>   torch RNG states (dropout)
        metadata  "state": JSON text: step, train config, NumPy bit-generator states (data order
                  and, per rank, the draws of training.draw), "engine": optimizer hyper-parameters
"""
from __future__ import annotations

from typing import Any

import torch

from diffusion_core.training.state import ResumeError


# --- optimizer ----------------------------------------------------------------------------------

def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's state_dict into tensors (for safetensors) and JSON (the rest)."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], saved: dict) -> None:
    """Restore moments and step counts; implementation switches (fused, foreach) stay as built."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in saved["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    current = optimizer.state_dict()["param_groups"]
    if len(current) != len(saved["param_groups"]):
        raise ResumeError("the checkpoint's optimizer has a different number of parameter groups")
    hyper = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")
    groups = [{**now, **{k: (tuple(v) if k == "betas" else v) for k, v in old.items() if k in hyper}}
              for now, old in zip(current, saved["param_groups"])]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
