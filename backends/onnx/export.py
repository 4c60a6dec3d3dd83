"""Export a checkpoint's Unet to one self-contained model.onnx, checked and stamped with provenance.

    python -m backends.onnx.export <checkpoint-folder> [--opset 20] [--no-verify]

writes <folder>/model.onnx atomically (a temporary file in the same folder, flushed, then renamed
over the old one), after onnx.checker has passed and ONNX Runtime has reproduced PyTorch's output.

The graph's interface is the contract of runtime.py: inputs `x` (B, C, H, W) and `t` (B,) float32
[+ `x_self_cond`], output `out`, batch dynamic. metadata_props record the checkpoint format, the
Unet config and a sha256 of the weights, so the loader refuses a graph that no longer matches
model.safetensors. `add_metadata` and `write_model_onnx` need no torch: another exporter (the
MindSpore one) can stamp and store its graph the same way.

torch is imported inside the functions that need it, so importing this module stays light.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from diffusion_core.config import ModelConfig
from diffusion_core.files import write_atomically

from .runtime import (INPUT_SELF_COND, INPUT_T, INPUT_X, META_EXPORTER, META_FORMAT_VERSION,
                      META_UNET_CONFIG, META_WEIGHTS_SHA256, RuntimeOptions, load_onnx_model,
                      unet_config_json, weights_fingerprint)

# Opset 20 is what torch 2.13's exporter emits natively (asking for less makes it run the ONNX
# version converter afterwards, one more thing that can fail); ONNX Runtime >= 1.17 runs it.
DEFAULT_OPSET = 20
OUTPUT_NAME = "out"
ONNX_FILE = "model.onnx"  # the name diffusion_core/checkpoint.py looks for
VERIFY_TOLERANCE = 1e-4   # max |ORT - PyTorch| accepted after export; float32 reordering is ~1e-6


@dataclass(frozen=True)
class ExportResult:
    path: Path
    opset: int
    size_bytes: int
    max_abs_diff: Optional[float]   # ORT vs PyTorch on a random batch; None when not verified


def add_metadata(model, config: ModelConfig, weights: Mapping[str, np.ndarray], exporter: str) -> None:
    """Stamp an onnx.ModelProto with what it was exported from (see runtime.check_provenance)."""
    stamps = {META_FORMAT_VERSION: str(config.format_version),
              META_UNET_CONFIG: unet_config_json(config.unet),
              META_WEIGHTS_SHA256: weights_fingerprint(weights),
              META_EXPORTER: exporter}
    kept = [p for p in model.metadata_props if p.key not in stamps]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in stamps.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def serialize_checked(model) -> bytes:
    """onnx.checker's full check (types and shapes inferred too), then the file's bytes.

    One file: weights live inside the protobuf, which caps a model at 2 GB; a 28x28 Unet is ~7 MB.
    """
    import onnx
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    if len(data) >= 2**31:
        raise ValueError("the graph with its weights exceeds protobuf's 2 GB limit for one file")
    return data


def export_pytorch_unet(unet, config: ModelConfig, opset: int = DEFAULT_OPSET):
    """The Unet as an onnx.ModelProto with a dynamic batch and our input/output names.

    torch 2.13 exports through torch.export (the "dynamo" exporter, which needs onnxscript).
    external_data=False keeps the weights inside the one file instead of a sidecar .data file.
    """
    import torch

    unet = unet.eval()
    cfg = config.unet
    # Trace with batch 2: torch.export specialises a dimension it sees as 0 or 1 to a constant.
    example_x = torch.zeros(2, cfg.channels, cfg.image_size, cfg.image_size)
    args = (example_x, torch.full((2,), 10.5))
    names = [INPUT_X, INPUT_T]
    if cfg.self_condition:
        args += (torch.zeros_like(example_x),)
        names.append(INPUT_SELF_COND)
    batch = torch.export.Dim("batch", min=1, max=65536)
    dynamic_shapes = tuple({0: batch} for _ in args)  # positional, so Unet's arg names don't matter
    with torch.no_grad(), warnings.catch_warnings():
        # Harmless notes from torch 2.13's exporter, printed on every export: the Dim name is
        # replaced by the input name (we name both "batch"), and a pytree deprecation.
        warnings.filterwarnings("ignore", message=".*axis name: batch will not be used")
        warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)")
        # ...and one "torchvision is not installed" line per torchvision op it knows of.
        registration = logging.getLogger("torch.onnx._internal.exporter._registration")
        level = registration.level
        registration.setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(unet, args, dynamo=True, input_names=names,
                                        output_names=[OUTPUT_NAME], dynamic_shapes=dynamic_shapes,
                                        opset_version=opset, external_data=False, optimize=True,
                                        verbose=False)
        finally:
            registration.setLevel(level)
    return program.model_proto


def write_model_onnx(folder: str | os.PathLike, data: bytes) -> Path:
    """Put data at folder/model.onnx atomically: readers see the old file or the new, never half.

    The temporary file sits in the same folder (so the rename cannot cross file systems) and is
    removed if anything fails, because checkpoint saving refuses folders holding foreign files.
    """
    return write_atomically(Path(folder) / ONNX_FILE, data, durable=True)


def max_difference(data: bytes, config: ModelConfig, weights: Mapping[str, np.ndarray], reference,
                   batch: int = 3) -> float:
    """Run the graph in ONNX Runtime and `reference(x, t, x_self_cond) -> NumPy` (the framework the
    graph came from) on one random batch at three timesteps (one fractional); max abs difference."""
    cfg = config.unet
    model = load_onnx_model(data, config, weights, RuntimeOptions(device="cpu"), where="the new graph")
    rng = np.random.default_rng(0)
    shape = (batch, cfg.channels, cfg.image_size, cfg.image_size)
    worst = 0.0
    for t in (0.0, 421.5, config.diffusion.num_train_timesteps - 1.0):
        x = rng.standard_normal(shape, dtype=np.float32)
        cond = rng.standard_normal(shape, dtype=np.float32) if cfg.self_condition else None
        worst = max(worst, float(np.abs(model(x, t, cond) - reference(x, t, cond)).max()))
    return worst


def verify_against_pytorch(data: bytes, unet, config: ModelConfig,
                           weights: Mapping[str, np.ndarray], batch: int = 3) -> float:
    """max_difference with the PyTorch Unet as the reference."""
    import torch

    def reference(x, t, cond):
        with torch.inference_mode():
            return unet(torch.from_numpy(x), torch.full((len(x),), t),
                        None if cond is None else torch.from_numpy(cond)).numpy()
    return max_difference(data, config, weights, reference, batch)


@dataclass(frozen=True)
class ExportedGraph:
    data: bytes                     # the serialised, checked model.onnx
    opset: int
    max_abs_diff: Optional[float]   # ORT vs PyTorch on a random batch; None when not verified


def export_graph(config: ModelConfig, weights: Mapping[str, np.ndarray], opset: int = DEFAULT_OPSET,
                 verify: bool = True) -> ExportedGraph:
    """The model.onnx bytes for these weights; refuse a graph that fails onnx.checker or disagrees
    with PyTorch by more than VERIFY_TOLERANCE. Writes nothing."""
    import torch

    from backends.pytorch import build_unet, load_state_from_numpy

    unet = build_unet(config.unet)
    load_state_from_numpy(unet, weights)
    model = export_pytorch_unet(unet, config, opset)
    add_metadata(model, config, weights, exporter=f"torch {torch.__version__} torch.onnx.export(dynamo=True)")
    data = serialize_checked(model)
    diff = None
    if verify:
        diff = verify_against_pytorch(data, unet.eval(), config, weights)
        if not diff <= VERIFY_TOLERANCE:
            raise RuntimeError(f"the exported graph differs from PyTorch by {diff:.3g} (more than "
                               f"{VERIFY_TOLERANCE}); not writing it. Try another --opset")
    opset_used = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return ExportedGraph(data=data, opset=opset_used, max_abs_diff=diff)


def export_checkpoint(folder: str | os.PathLike, opset: int = DEFAULT_OPSET,
                      verify: bool = True) -> ExportResult:
    """Export the checkpoint in folder to folder/model.onnx (export_graph, then an atomic write)."""
    from diffusion_core.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(folder)
    graph = export_graph(checkpoint.config, checkpoint.weights, opset, verify)
    path = write_model_onnx(checkpoint.folder, graph.data)
    return ExportResult(path=path, opset=graph.opset, size_bytes=len(graph.data),
                        max_abs_diff=graph.max_abs_diff)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m backends.onnx.export",
        description="Export a checkpoint folder's Unet to <folder>/model.onnx for ONNX Runtime.")
    parser.add_argument("folder", help="checkpoint folder holding config.json and model.safetensors")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset to emit (default {DEFAULT_OPSET})")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the ONNX Runtime vs PyTorch comparison after export")
    args = parser.parse_args(argv)
    from diffusion_core.checkpoint import CheckpointError
    try:
        result = export_checkpoint(args.folder, opset=args.opset, verify=not args.no_verify)
    except (CheckpointError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    check = "" if result.max_abs_diff is None else f", max |ORT - PyTorch| = {result.max_abs_diff:.2e}"
    print(f"wrote {result.path} (opset {result.opset}, {result.size_bytes / 1e6:.1f} MB{check})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
