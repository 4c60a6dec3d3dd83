"""Serving a pulled repo that is not in the toolkit's layout (a diffusers UNet2DModel repo).

The Hub cache holds the repo's own files; the app serves a converted copy, a toolkit checkpoint
folder beside the cache (one per repo and commit, so it is made once and found again offline),
with model.onnx exported when PyTorch is here, so that every backend can run it.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

from diffusion_core.checkpoint import CONFIG_FILE
from diffusion_core.convert import open_checkpoint, save_imported

IMPORTS_FOLDER = "diffusion-toolkit-imports"


def imports_root(hub_cache_dir: Optional[str]) -> Path:
    """Where converted repos live: next to the Hub cache the service pulls into."""
    from huggingface_hub import constants
    return Path(hub_cache_dir or constants.HF_HUB_CACHE).expanduser() / IMPORTS_FOLDER


def servable_folder(snapshot: Path, repo_id: str, root: Path) -> Path:
    """snapshot itself for a toolkit checkpoint, else its converted copy under root (made now if
    missing). The copy's notes say where it came from (repo and commit)."""
    checkpoint = open_checkpoint(snapshot, source=f"{repo_id}@{snapshot.name}")
    if checkpoint.layout == "toolkit":
        return snapshot
    out = root / repo_id.replace("/", "--") / snapshot.name   # the snapshot folder is the commit sha
    if (out / CONFIG_FILE).is_file():
        return out
    onnx = None
    if all(importlib.util.find_spec(m) for m in ("torch", "onnx", "onnxruntime")):
        from backends.onnx.export import export_graph
        onnx = export_graph(checkpoint.config, checkpoint.weights).data   # checked against PyTorch
    return save_imported(out, checkpoint.config, checkpoint.weights, onnx_bytes=onnx)
