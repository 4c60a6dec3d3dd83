"""Serving a pulled repo that was not in the toolkit's layout (a diffusers UNet2DModel repo).

hub.pull converts such a repo into a toolkit checkpoint folder (webapp/pulls.py keeps one per repo
and commit); this adds its model.onnx, exported and checked against PyTorch when PyTorch and ONNX
are here, so that every backend can run it.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from diffusion_core.checkpoint import ONNX_FILE, load_checkpoint


def add_onnx(folder: Path) -> None:
    """Export model.onnx into an imported checkpoint that has none (its own files are kept)."""
    if (folder / ONNX_FILE).is_file() or not all(importlib.util.find_spec(m) for m in ("torch", "onnx",
                                                                                       "onnxruntime")):
        return
    checkpoint = load_checkpoint(folder)
    if not checkpoint.config.notes.get("imported_from"):
        return
    from backends.onnx.export import export_graph, write_model_onnx
    write_model_onnx(folder, export_graph(checkpoint.config, checkpoint.weights).data)
