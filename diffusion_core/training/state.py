"""A training run's checkpoint file, shared by every framework's trainer.

    <out>/training_state.safetensors
        tensors   float32 weights (model.<name>, ema.<name>), optimizer moments, RNG states, ...
        metadata  "state": JSON text: step, train config, NumPy bit-generator states, loss, and
                  "format", which names the trainer that can continue it
    <out>/train_config.json            the run's TrainConfig, for people and tools

One file, so tensors and their JSON always come from the same save. It is written to a temporary
name in the same folder, fsynced and renamed over the old one (os.replace is atomic), so a crash
leaves the previous checkpoint. Nothing is pickled: safetensors (NumPy) for arrays, JSON for the
rest. Each trainer converts its own tensors to and from NumPy.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from ..files import write_atomically
from .config import TrainConfig

STATE_FILE = "training_state.safetensors"
RUN_CONFIG_FILE = "train_config.json"

# TrainConfig fields a resumed run may change: they steer monitoring, length and hardware, not the
# maths of a step. Everything else must match the checkpoint.
FREE_ON_RESUME = frozenset({"out", "steps", "log_every", "sample_every", "sample_steps", "sample_sampler",
                            "checkpoint_every", "device", "num_threads"})


class ResumeError(ValueError):
    """A training checkpoint that cannot be continued; the message says what differs or is broken."""


def save_state(out: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict, fmt: str) -> Path:
    """Write the run's checkpoint atomically; `fmt` names the trainer (checked on load)."""
    from safetensors.numpy import save
    contiguous = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    path = Path(out) / STATE_FILE
    write_atomically(path, save(contiguous, metadata={"state": json.dumps({**meta, "format": fmt})}))
    return path


# The state formats of the built-in trainers, and the command that continues each.
PYTORCH_FORMAT = "diffusion-toolkit-training-state/1"
MINDSPORE_FORMAT = "diffusion-toolkit-mindspore-training-state/1"
TRAINERS = {PYTORCH_FORMAT: "the PyTorch trainer (python -m backends.pytorch.train)",
            MINDSPORE_FORMAT: "the MindSpore trainer (python -m backends.mindspore.train)"}


def load_state(out: str | os.PathLike, fmt: str) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, JSON state) of <out>/training_state.safetensors; ResumeError if absent, broken or
    written by another trainer (the message then names it)."""
    from safetensors import SafetensorError, safe_open
    path = Path(out) / STATE_FILE
    if not path.is_file():
        raise ResumeError(f"--resume: {path} does not exist, so there is no run to continue in "
                          f"{out}; drop --resume to start a new run there")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta_text = (f.metadata() or {}).get("state")
            arrays = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ResumeError(f"{path} is truncated or corrupt ({e}); restart the run without --resume "
                          "in a new --out folder") from e
    try:
        meta = json.loads(meta_text or "")
    except json.JSONDecodeError:
        meta = {}
    found = meta.get("format")
    if found != fmt:
        hint = (f"; it was written by {TRAINERS[found]}: resume it with that trainer, or start a new "
                "run from its exported model") if found in TRAINERS else ""
        raise ResumeError(f"{path} is not a training checkpoint of this trainer (format "
                          f"{found!r}, expected {fmt!r}){hint}")
    return arrays, meta


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def config_differences(saved: dict, now: TrainConfig, free: Iterable[str] = FREE_ON_RESUME) -> list[str]:
    """'name: checkpoint X, now Y' for every field that must match on resume but does not.

    A setting the checkpoint predates (a field added to the toolkit since) matches when it is at
    its default now: the run was trained without it, which is what its default means."""
    from ..config import ModelConfig
    free = frozenset(free)
    a, b = _flatten(saved), _flatten(json.loads(now.to_json()))
    plain = TrainConfig(model=ModelConfig(network=type(now.model.network)()))
    defaults = _flatten(json.loads(plain.to_json()))
    a.update({key: defaults[key] for key in set(b) - set(a) if key in defaults})
    return [f"{key}: checkpoint {a.get(key, '<absent>')!r}, now {b.get(key, '<absent>')!r}"
            for key in sorted(set(a) | set(b))
            if key.split(".")[0] not in free and not key.startswith("model.notes")
            and a.get(key, "<absent>") != b.get(key, "<absent>")]


def check_resumable(meta: dict, config: TrainConfig, *, free: Iterable[str] = FREE_ON_RESUME,
                    world_size: Optional[int] = None) -> None:
    """Raise ResumeError naming every setting that differs from the checkpoint's and matters."""
    diffs = config_differences(meta["train_config"], config, free)
    if diffs:
        raise ResumeError("--resume: these settings differ from the checkpoint's, so the run cannot "
                          "continue exactly: " + "; ".join(diffs) + ". Use the original flags "
                          f"(see {RUN_CONFIG_FILE}) or start a new run in another --out")
    saved_world = meta.get("world_size", 1)
    if world_size is not None and saved_world != world_size:
        raise ResumeError(f"--resume: the checkpoint was written by {saved_world} process(es) "
                          f"and this run has {world_size}; each process draws its own noise, so launch "
                          f"{saved_world} process(es) again (torchrun --nproc_per_node {saved_world} or "
                          f"msrun --worker_num {saved_world}; for 1, neither)")


def refuse_to_overwrite(out: Path, resume: bool) -> None:
    """A new run must not silently replace one that is already in `out`."""
    if not resume and (Path(out) / STATE_FILE).exists():
        raise ResumeError(f"{out} already holds a run; add --resume to continue it, or choose another --out")
