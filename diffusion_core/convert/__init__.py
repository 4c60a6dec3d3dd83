"""Readers of foreign checkpoints, and the one function that opens any checkpoint folder.

    open_checkpoint(folder)       a toolkit checkpoint, or a diffusers UNet2DModel folder (bare,
                                  unet/ + scheduler/, or a pipeline repo), as a validated Checkpoint
    import_checkpoint(src, out)   any supported source written as a toolkit checkpoint folder
    python -m diffusion_core.convert --help     the command line (import / export --to diffusers)

Sources (each reader is framework-free unless it says otherwise):
    diffusers.py      diffusers layouts and scheduler configs: json + safetensors only
    lucidrains.py     denoising-diffusion-pytorch trainer milestones (results/model-N.pt), read with
                      torch.load(weights_only=True): a local file only, never a download
    mindspore_port.py denoising-diffusion-mindspore .ckpt files, read by ms_checkpoint.py's
                      protobuf reader (no MindSpore needed)
Weights from the network only ever come through safetensors; nothing downloaded is unpickled.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from ..checkpoint import Checkpoint, CheckpointError, _check_names_and_shapes, load_checkpoint, save_checkpoint
from ..config import ConfigError, ModelConfig
from .diffusers import LayoutError, find_layout, read_layout


def validated(config: ModelConfig, weights: Mapping[str, np.ndarray], where: Path) -> dict[str, np.ndarray]:
    """weights checked against the architecture's canonical table (names, shapes, finite), in its order."""
    try:
        expected = config.architecture.parameter_shapes(config.network)
    except ConfigError as e:
        raise CheckpointError(f"{where}: {e}") from None
    _check_names_and_shapes({k: tuple(np.shape(v)) for k, v in weights.items()}, expected, config, where)
    bad = [name for name in expected if not np.isfinite(weights[name]).all()]
    if bad:
        raise CheckpointError(f"{where} holds NaN or Inf values in {', '.join(bad[:5])}; use an earlier save")
    return {name: np.asarray(weights[name], dtype=np.float32) for name in expected}


def open_checkpoint(folder: str | os.PathLike, source: Optional[str] = None) -> Checkpoint:
    """A checkpoint folder of any layout this toolkit reads, validated; CheckpointError says what
    is wrong. source: how to name it in the notes (e.g. "google/ddpm-cifar10-32@main")."""
    folder = Path(folder).expanduser()
    try:
        layout = find_layout(folder) if folder.is_dir() else None
        if layout is None:
            return load_checkpoint(folder)
        config, weights = read_layout(layout, source)
    except (LayoutError, ConfigError) as e:
        raise CheckpointError(str(e)) from None
    return Checkpoint(folder=folder, config=config, weights=validated(config, weights, layout.unet),
                      onnx_path=None, layout=f"diffusers {layout.kind}")


def save_imported(out: str | os.PathLike, config: ModelConfig, weights: Mapping[str, np.ndarray],
                  onnx_bytes: Optional[bytes] = None) -> Path:
    """Write an imported model as a toolkit checkpoint folder (validated first)."""
    return save_checkpoint(out, config, validated(config, weights, Path(str(out))), onnx_bytes=onnx_bytes)


__all__ = ["LayoutError", "open_checkpoint", "save_imported", "validated"]
