"""The training checkpoint: everything `--resume` needs to continue a run exactly, in one file.

    <out>/training_state.safetensors
        tensors   model.<name>, ema.<name>            float32 weights (canonical names)
                  optimizer.<param index>.<key>       AdamW moments and step counts
                  rng.torch_cpu.<rank>, rng.torch_cuda.<rank>   torch RNG states (dropout)
        metadata  "state": JSON text: step, train config, NumPy bit-generator states (data order
                  and, per rank, the draws of training.draw), optimizer hyper-parameters, loss
    <out>/train_config.json                           the run's TrainConfig, for people and tools

One file means the tensors and their JSON can never come from two different saves. It is written
to a temporary name, fsynced and renamed over the old one (os.replace is atomic), so a crash
leaves the previous checkpoint. Nothing is pickled: safetensors for tensors, JSON for the rest.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from diffusion_core.train_config import TrainConfig

STATE_FILE = "training_state.safetensors"
RUN_CONFIG_FILE = "train_config.json"
STATE_FORMAT = "diffusion-toolkit-training-state/1"

# TrainConfig fields a resumed run may change: they steer monitoring, length and hardware, not the
# maths of a step. Everything else must match the checkpoint.
FREE_ON_RESUME = frozenset({"out", "steps", "log_every", "sample_every", "sample_steps", "sample_sampler",
                            "checkpoint_every", "device", "num_threads", "bf16"})


class ResumeError(ValueError):
    """A training checkpoint that cannot be continued; the message says what differs or is broken."""


def write_atomically(path: Path, data: bytes) -> None:
    """Temporary file in the same folder, fsync, os.replace: readers see the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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
    """Write the training checkpoint atomically (tensors are copied to CPU, made contiguous)."""
    from safetensors.torch import save
    cpu = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta = {**meta, "format": STATE_FORMAT}
    path = Path(out) / STATE_FILE
    write_atomically(path, save(cpu, metadata={"state": json.dumps(meta)}))
    return path


def load_state(out: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read <out>/training_state.safetensors: (tensors on CPU, JSON state); ResumeError if broken."""
    from safetensors import SafetensorError, safe_open
    path = Path(out) / STATE_FILE
    if not path.is_file():
        raise ResumeError(f"--resume: {path} does not exist, so there is no run to continue in "
                          f"{out}; drop --resume to start a new run there")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta_text = (f.metadata() or {}).get("state")
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ResumeError(f"{path} is truncated or corrupt ({e}); restart the run without --resume "
                          "in a new --out folder") from e
    try:
        meta = json.loads(meta_text or "")
    except json.JSONDecodeError:
        meta = {}
    if meta.get("format") != STATE_FORMAT:
        raise ResumeError(f"{path} is not a training checkpoint of this trainer (format "
                          f"{meta.get('format')!r}, expected {STATE_FORMAT!r})")
    return tensors, meta


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def config_differences(saved: dict, now: TrainConfig) -> list[str]:
    """'name: checkpoint X, now Y' for every field that must match on resume but does not."""
    current = json.loads(now.to_json())
    a, b = _flatten(saved), _flatten(current)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key.split(".")[0] in FREE_ON_RESUME or key.startswith("model.notes"):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            diffs.append(f"{key}: checkpoint {a.get(key, '<absent>')!r}, now {b.get(key, '<absent>')!r}")
    return diffs


def check_resumable(meta: dict, config: TrainConfig, world_size: int) -> None:
    diffs = config_differences(meta["train_config"], config)
    if diffs:
        raise ResumeError("--resume: these settings differ from the checkpoint's, so the run cannot "
                          "continue exactly: " + "; ".join(diffs) + ". Use the original flags "
                          f"(see {RUN_CONFIG_FILE}) or start a new run in another --out")
    if meta["world_size"] != world_size:
        raise ResumeError(f"--resume: the checkpoint was written by {meta['world_size']} process(es) "
                          f"and this run has {world_size}; each process draws its own noise, so use "
                          f"torchrun --nproc_per_node {meta['world_size']} (or 1 process: no torchrun)")
