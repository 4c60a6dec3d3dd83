"""The MindSpore trainer's checkpoint: everything `--resume` needs to continue a run exactly.

The same layout as the PyTorch trainer's (backends/pytorch/trainer_state.py), with NumPy arrays:

    <out>/training_state.safetensors
        tensors   model.<canonical name>, ema.<canonical name>   float32 weights
                  optimizer.exp_avg.<canonical name>, optimizer.exp_avg_sq.<canonical name>,
                  optimizer.state_step                           AdamW moments and step count
                  loss_scaler.scale_value, loss_scaler.counter   dynamic loss scaling (float16)
        metadata  "state": JSON: step, train config, NumPy bit-generator states, loss, framework
    <out>/train_config.json                                       the run's TrainConfig

One file, so tensors and JSON always come from the same save; written to a temporary name,
fsynced and renamed over the old one (atomic). No pickle: safetensors and JSON only.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from diffusion_core.train_config import TrainConfig

STATE_FILE = "training_state.safetensors"
RUN_CONFIG_FILE = "train_config.json"
STATE_FORMAT = "diffusion-toolkit-mindspore-training-state/1"

# TrainConfig fields a resumed run may change (monitoring, length, hardware); the PyTorch trainer
# allows the same. bf16 is not among them here: it changes the numbers of every step.
FREE_ON_RESUME = frozenset({"out", "steps", "log_every", "sample_every", "sample_steps",
                            "sample_sampler", "checkpoint_every", "device", "num_threads"})


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


def save_state(out: str | os.PathLike, tensors: dict[str, np.ndarray], meta: dict) -> Path:
    from safetensors.numpy import save
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    path = Path(out) / STATE_FILE
    write_atomically(path, save(arrays, metadata={"state": json.dumps({**meta,
                                                                          "format": STATE_FORMAT})}))
    return path


def load_state(out: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Read <out>/training_state.safetensors: (arrays, JSON state); ResumeError if absent or broken."""
    from safetensors import SafetensorError, safe_open
    path = Path(out) / STATE_FILE
    if not path.is_file():
        raise ResumeError(f"--resume: {path} does not exist, so there is no run to continue in "
                          f"{out}; drop --resume to start a new run there")
    try:
        with safe_open(str(path), framework="numpy") as f:
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
        hint = (" (it was written by the PyTorch trainer: resume it with python -m "
                "backends.pytorch.train, or start a MindSpore run from its exported model)"
                if "mindspore" not in str(meta.get("format")) and meta.get("format") else "")
        raise ResumeError(f"{path} is not a MindSpore training checkpoint (format "
                          f"{meta.get('format')!r}, expected {STATE_FORMAT!r}){hint}")
    return tensors, meta


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def check_resumable(meta: dict, config: TrainConfig) -> None:
    """Raise ResumeError naming every setting that differs from the checkpoint's and matters."""
    saved, now = _flatten(meta["train_config"]), _flatten(json.loads(config.to_json()))
    diffs = [f"{key}: checkpoint {saved.get(key, '<absent>')!r}, now {now.get(key, '<absent>')!r}"
             for key in sorted(set(saved) | set(now))
             if key.split(".")[0] not in FREE_ON_RESUME and not key.startswith("model.notes")
             and saved.get(key, "<absent>") != now.get(key, "<absent>")]
    if diffs:
        raise ResumeError("--resume: these settings differ from the checkpoint's, so the run cannot "
                          "continue exactly: " + "; ".join(diffs) + ". Use the original flags "
                          f"(see {RUN_CONFIG_FILE}) or start a new run in another --out")
