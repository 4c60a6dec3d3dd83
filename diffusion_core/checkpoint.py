"""Canonical checkpoints: a folder with config.json, float32 weights in safetensors, a model card.

    config.json          ModelConfig.to_json(): architecture and its network config, diffusion
                         process, format_version, notes (config.py; v1 files are read too)
    model.safetensors    float32 arrays under the architecture's canonical parameter names
    model.onnx           optional exported graph
    README.md            model card with Hub metadata (model_card.py)
    samples.png          optional sample grid shown by the card

The same folder is the Hugging Face Hub repo layout (hub.py). Saving is atomic: everything is
written into a hidden sibling folder, flushed to disk, then swapped in with two renames, so a crash
leaves either the previous checkpoint or the new one, never a mixture. Loading validates everything
a backend would trip over later and says what to do; weights go through safetensors only, so
nothing from a file or the network is ever unpickled.
"""
from __future__ import annotations

import io
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .config import ConfigError, ModelConfig
from .files import fsync_folder
from .model_card import render_card

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"
CARD_FILE = "README.md"
SAMPLES_FILE = "samples.png"
CHECKPOINT_FILES = (CONFIG_FILE, WEIGHTS_FILE, ONNX_FILE, CARD_FILE, SAMPLES_FILE)

_SHOWN = 5  # names listed per problem in an error; the rest are counted


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be saved or loaded; the message says what and what to do."""


@dataclass(frozen=True)
class Checkpoint:
    """A validated checkpoint: its config and float32 weights keyed by canonical parameter name."""

    folder: Path
    config: ModelConfig
    weights: dict[str, np.ndarray]
    onnx_path: Path | None = None
    layout: str = "toolkit"   # or the foreign layout it was read from (diffusion_core.convert)


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


# --- writing ----------------------------------------------------------------------------------

def write_durably(path: Path, data: bytes) -> None:
    """Write bytes and force them to disk, so that the rename that publishes them is durable."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _check_replaceable(target: Path) -> None:
    """Refuse to replace a folder holding anything but checkpoint files: the swap deletes it."""
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"{target} is a file, not a folder; choose a folder path for the checkpoint")
    if target.is_dir():
        foreign = sorted(p.name for p in target.iterdir()
                         if p.name not in CHECKPOINT_FILES and not _interrupted_write(p.name))
        if foreign:
            raise CheckpointError(
                f"{target} already holds files that are not part of a checkpoint ({_names(foreign)}); "
                "a checkpoint replaces its folder as a whole, so choose a new or checkpoint-only folder")


def _interrupted_write(name: str) -> bool:
    """A temporary file of files.write_atomically for a checkpoint file (e.g. a model.onnx export
    that was killed): ours, half-written, and replaced with the folder."""
    return any(name.startswith(f".{known}.incoming-") for known in CHECKPOINT_FILES)


def remove_leftovers(target: Path) -> None:
    """What an interrupted save of target left beside it: staging folders (never complete, or
    complete but not swapped in), and, when target itself exists, previous checkpoints a kill
    between the two renames kept. One writer per checkpoint folder is assumed (the trainer's
    rank 0, the Hub copy), so anything found here belongs to a process that died."""
    if not target.parent.is_dir():
        return
    for leftover in target.parent.glob(f".{target.name}.incoming-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if target.is_dir():
        for leftover in target.parent.glob(f".{target.name}.previous-*"):
            shutil.rmtree(leftover, ignore_errors=True)


def staging_folder(target: Path) -> Path:
    """A new hidden sibling of target: same file system, so renaming it into place is atomic.
    An earlier interrupted save's leftovers are removed first, so they never block this one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    staging = target.parent / f".{target.name}.incoming-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    return staging


def swap_into_place(staging: Path, target: Path) -> None:
    """Replace target by the complete folder staging: rename old away, rename new in, delete old.

    Between the two renames target does not exist; a crash there leaves the previous checkpoint
    in a `.{name}.previous-*` sibling, which load_checkpoint points out.
    """
    _check_replaceable(target)
    fsync_folder(staging)
    previous = None
    if target.exists():
        previous = target.parent / f".{target.name}.previous-{uuid.uuid4().hex[:8]}"
        os.rename(target, previous)
    try:
        os.rename(staging, target)
    except BaseException:
        if previous is not None:
            os.rename(previous, target)  # put the old checkpoint back before reporting
        raise
    fsync_folder(target.parent)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
    remove_leftovers(target)  # a previous checkpoint an earlier kill left while target was missing


def _png_bytes(image: Any) -> bytes:
    """PNG-encode a PIL image or an (H, W[, C]) array: uint8 as is, floats in [0, 1] scaled."""
    try:
        from PIL import Image
    except ImportError as e:
        raise CheckpointError("sample_grid needs Pillow (pip install pillow)") from e
    if isinstance(image, np.ndarray):
        array = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
            raise CheckpointError(f"sample_grid must be an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) "
                                  f"image, got shape {image.shape}; tile samples into one grid first")
        if array.dtype != np.uint8:
            array = np.round(np.clip(np.nan_to_num(array.astype(np.float64)), 0, 1) * 255).astype(np.uint8)
        image = Image.fromarray(array)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _float32_weights(weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Canonical weights: float32, C-contiguous, finite. Other floats are converted, rest refused."""
    if not weights:
        raise CheckpointError("weights is empty; pass the model's parameters as {name: numpy array}")
    converted, not_float, not_finite = {}, [], []
    for name, array in weights.items():
        array = np.asarray(array)
        if not isinstance(name, str) or not name or not np.issubdtype(array.dtype, np.floating):
            not_float.append(f"{name!r} ({array.dtype})")
            continue
        with np.errstate(over="ignore"):  # overflow to Inf is reported below, by name
            array = np.ascontiguousarray(array, dtype=np.float32)
        if not np.isfinite(array).all():
            not_finite.append(name)
        converted[name] = array
    if not_float:
        raise CheckpointError(f"weights must be floating-point arrays under non-empty string names; "
                              f"refused {_names(not_float)}")
    if not_finite:
        raise CheckpointError(f"weights hold NaN or Inf values in {_names(not_finite)}; training "
                              "diverged or a tensor was not initialised: save an earlier, finite state")
    return converted


def save_checkpoint(folder: str | os.PathLike, config: ModelConfig, weights: Mapping[str, np.ndarray], *,
                    onnx_bytes: bytes | None = None, sample_grid: Any = None, card_extra: str = "") -> Path:
    """Atomically write (or replace) a checkpoint folder and return its path.

    weights: {canonical name: floating array}, stored as float32. sample_grid: one image (PIL or
    an (H, W[, C]) array, floats in [0, 1]) shown in the model card. card_extra: Markdown appended
    to the card. The previous contents of folder are replaced as a whole, never mixed.
    """
    from safetensors.numpy import save as safetensors_bytes

    target = Path(folder).expanduser().absolute()
    _check_replaceable(target)
    tensors = _float32_weights(weights)
    files = {CONFIG_FILE: config.to_json().encode(),
             WEIGHTS_FILE: safetensors_bytes(tensors, metadata={"format": "np"})}
    if onnx_bytes is not None:
        files[ONNX_FILE] = bytes(onnx_bytes)
    if sample_grid is not None:
        files[SAMPLES_FILE] = _png_bytes(sample_grid)
    files[CARD_FILE] = render_card(config, has_samples=SAMPLES_FILE in files, extra=card_extra).encode()
    staging = staging_folder(target)
    try:
        for name, data in files.items():
            write_durably(staging / name, data)
        swap_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful swap
    return target


# --- reading ----------------------------------------------------------------------------------

def default_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The canonical parameter shapes of the network that config describes (its architecture's)."""
    try:
        return config.architecture.parameter_shapes(config.network)
    except ConfigError as e:
        raise CheckpointError(f"config.json describes a network this toolkit cannot build: {e}") from e


def _missing_folder_message(folder: Path) -> str:
    leftovers = sorted(folder.parent.glob(f".{folder.name}.previous-*")) if folder.parent.is_dir() else []
    if leftovers:
        return (f"checkpoint folder {folder} does not exist, but a save into it was interrupted: the "
                f"previous checkpoint is in {leftovers[-1]}; rename it back to {folder.name}")
    return f"checkpoint folder {folder} does not exist; check the path, or save or pull a checkpoint first"


def _read_config(folder: Path) -> ModelConfig:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {CONFIG_FILE}: it is not a checkpoint folder; point at the "
                              f"folder that holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        text = path.read_text(encoding="utf-8")
        if '"_class_name"' in text and '"format_version"' not in text:
            raise CheckpointError(f"{folder} is a diffusers folder, not a toolkit checkpoint: open it with "
                                  "diffusion_core.convert.open_checkpoint (load_model does), or convert it with "
                                  f"`python -m diffusion_core.convert import {folder} OUT`")
        return ModelConfig.from_json(text)
    except (ConfigError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: {e}") from e


def _check_names_and_shapes(found: dict[str, tuple[int, ...]], expected: Mapping[str, Sequence[int]],
                            config: ModelConfig, path: Path) -> None:
    expected = {name: tuple(int(n) for n in shape) for name, shape in expected.items()}
    missing = [n for n in expected if n not in found]
    unexpected = [n for n in found if n not in expected]
    misshaped = [f"{n} {list(found[n])} (config needs {list(shape)})"
                 for n, shape in expected.items() if n in found and found[n] != shape]
    if not (missing or unexpected or misshaped):
        return
    problems = [f"{len(names)} {what}: {_names(names)}"
                for what, names in (("missing", missing), ("unexpected", unexpected),
                                    ("with the wrong shape", misshaped)) if names]
    raise CheckpointError(
        f"the tensors in {path} do not fit the network in config.json "
        f"({config.architecture.summary(config.network)}): {'; '.join(problems)}. "
        "Weights and config.json must come from the same save; re-save the checkpoint from the model")


def load_checkpoint(folder: str | os.PathLike, *,
                    expected_shapes: Mapping[str, Sequence[int]] | None = None) -> Checkpoint:
    """Read and validate a checkpoint folder; raise CheckpointError saying what is wrong.

    expected_shapes: {name: shape} the weights must match exactly; by default the shapes of the
    network described by config.json (its architecture's parameter_shapes).
    """
    from safetensors import SafetensorError, safe_open

    folder = Path(folder).expanduser()
    if not folder.exists():
        raise CheckpointError(_missing_folder_message(folder.absolute()))
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is a file; pass the checkpoint folder that holds {CONFIG_FILE}")
    config = _read_config(folder)
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} has {CONFIG_FILE} but no {WEIGHTS_FILE}; the checkpoint is "
                              "incomplete: save or download it again")
    weights: dict[str, np.ndarray] = {}
    try:
        with safe_open(path, framework="numpy") as f:
            # Dtypes and shapes come from the header, so a wrong file fails before reading data.
            header = {name: f.get_slice(name) for name in f.keys()}
            not_f32 = [f"{name} ({s.get_dtype()})" for name, s in header.items() if s.get_dtype() != "F32"]
            if not_f32:
                raise CheckpointError(f"{path} holds tensors that are not float32: {_names(not_f32)}; "
                                      "re-save with save_checkpoint, which stores float32")
            found = {name: tuple(s.get_shape()) for name, s in header.items()}
            expected = default_shapes(config) if expected_shapes is None else expected_shapes
            _check_names_and_shapes(found, expected, config, path)
            for name in expected:  # state_dict order, as the spec lists it
                weights[name] = f.get_tensor(name)
    except SafetensorError as e:
        raise CheckpointError(f"{path} is truncated or corrupt ({e}); download or save the checkpoint "
                              "again") from e
    not_finite = [name for name, array in weights.items() if not np.isfinite(array).all()]
    if not_finite:
        raise CheckpointError(f"{path} holds NaN or Inf values in {_names(not_finite)}; the model "
                              "diverged before it was saved: use an earlier checkpoint")
    onnx_path = folder / ONNX_FILE
    return Checkpoint(folder=folder, config=config, weights=weights,
                      onnx_path=onnx_path if onnx_path.is_file() else None)
