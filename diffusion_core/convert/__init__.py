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


def read_source(source: str | os.PathLike, *, kind: str = "auto", image_size: Optional[int] = None,
                weights: str = "ema", prediction_type: Optional[str] = None, schedule: Optional[str] = None,
                num_train_timesteps: Optional[int] = None, attn_heads: Optional[int] = None,
                resnet_block_groups: int = 8, revision: Optional[str] = None, endpoint: Optional[str] = None,
                cache_dir: Optional[str | os.PathLike] = None) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """ModelConfig and canonical weights of any supported source. kind: auto | diffusers |
    lucidrains | mindspore-port; auto goes by what `source` is: a folder (diffusers layout), a
    .pt/.pth file (lucidrains milestone), a .ckpt file (MindSpore port), else a Hub repo id."""
    path = Path(source).expanduser()
    if kind == "auto":
        if path.is_dir():
            kind = "diffusers"
        elif path.suffix in (".pt", ".pth"):
            kind = "lucidrains"
        elif path.suffix == ".ckpt":
            kind = "mindspore-port"
        elif not path.exists():
            kind = "diffusers"  # a Hub repo id
        else:
            raise ConfigError(f"{source} is neither a folder, a .pt milestone nor a .ckpt file; say which "
                              "format it is (diffusers, lucidrains, mindspore-port)")
    if kind in ("lucidrains", "mindspore-port") and not image_size:
        raise ConfigError(f"a {kind} checkpoint does not record its image size; give the size it was "
                          "trained at (GaussianDiffusion(image_size=...))")
    if kind == "lucidrains":
        from .lucidrains import read_milestone
        if schedule or num_train_timesteps:
            raise ConfigError("a lucidrains milestone records its schedule (betas); do not give one")
        return read_milestone(path, image_size=image_size, weights=weights, prediction_type=prediction_type)
    if kind == "mindspore-port":
        from .mindspore_port import read_port_checkpoint
        return read_port_checkpoint(path, image_size=image_size, schedule=schedule or "cosine",
                                    num_train_timesteps=num_train_timesteps or 1000,
                                    prediction_type=prediction_type or "eps", attn_heads=attn_heads,
                                    resnet_block_groups=resnet_block_groups)
    if kind != "diffusers":
        raise ConfigError(f"unknown format {kind!r}; choose auto, diffusers, lucidrains or mindspore-port")
    name = None
    if not path.exists():
        from .. import hub
        name = f"{source}@{revision or 'main'}"
        path = hub.pull(str(source), revision=revision, endpoint=endpoint, cache_dir=cache_dir)
    checkpoint = open_checkpoint(path, source=name)
    if checkpoint.layout == "toolkit":
        raise ConfigError(f"{source} is already a toolkit checkpoint; there is nothing to convert")
    return checkpoint.config, checkpoint.weights


def import_checkpoint(source: str | os.PathLike, out: str | os.PathLike, **options) -> Path:
    """Convert any supported source (read_source's options) into a toolkit checkpoint folder."""
    config, weights = read_source(source, **options)
    return save_imported(out, config, weights)


def export_checkpoint(folder: str | os.PathLike, out: str | os.PathLike, to: str = "diffusers") -> Path:
    """Write a checkpoint (any layout open_checkpoint reads) in another library's layout: `to` is
    "diffusers" (a DDPMPipeline folder)."""
    from .diffusers import export_pipeline
    if to != "diffusers":
        raise ConfigError(f"cannot export to {to!r}; the only target is diffusers")
    checkpoint = open_checkpoint(folder)
    return export_pipeline(checkpoint.config, checkpoint.weights, Path(out))


__all__ = ["LayoutError", "export_checkpoint", "import_checkpoint", "open_checkpoint", "read_source",
           "save_imported", "validated"]
