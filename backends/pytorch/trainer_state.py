"""What the PyTorch trainer puts in the run's checkpoint (the file itself: diffusion_core/run_state.py).

    <out>/training_state.safetensors
        tensors   model.<name>, ema.<name>            float32 weights (canonical names)
                  optimizer.<param index>.<key>       AdamW moments and step counts
                  rng.torch_cpu.<rank>, rng.torch_cuda.<rank>   torch RNG states (dropout)
        metadata  "state": JSON text: step, train config, NumPy bit-generator states (data order
                  and, per rank, the draws of training.draw), optimizer hyper-parameters, loss
    <out>/train_config.json                           the run's TrainConfig, for people and tools

Written atomically as one file, so tensors and JSON always come from the same save; no pickle.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from diffusion_core import run_state
from diffusion_core.run_state import ResumeError
from diffusion_core.train_config import TrainConfig

STATE_FORMAT = "diffusion-toolkit-training-state/1"
# bf16 autocast changes the rounding of a step but not its maths, so the PyTorch trainer lets a
# resumed run switch it (the MindSpore trainer does not: its float16 path scales the loss).
FREE_ON_RESUME = run_state.FREE_ON_RESUME | {"bf16"}


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


# --- the file -----------------------------------------------------------------------------------

def save_state(out: Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write the training checkpoint atomically (diffusion_core/run_state.py), tensors as NumPy."""
    arrays = {k: v.detach().to("cpu").contiguous().numpy() for k, v in tensors.items()}
    return run_state.save_state(out, arrays, meta, STATE_FORMAT)


def load_state(out: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors on CPU, JSON state) of the run in `out`; ResumeError if absent or broken."""
    arrays, meta = run_state.load_state(out, STATE_FORMAT, foreign_hint=(
        "it was written by another trainer: resume it with that trainer, or start a PyTorch run "
        "from its exported model"))
    return {k: torch.from_numpy(v) for k, v in arrays.items()}, meta


def check_resumable(meta: dict, config: TrainConfig, world_size: int) -> None:
    run_state.check_resumable(meta, config, free=FREE_ON_RESUME, world_size=world_size)
