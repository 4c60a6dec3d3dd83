"""Export a checkpoint's network to one self-contained model.onnx, checked and stamped with provenance.

    python -m backends.onnx.export <checkpoint-folder> [--opset 20] [--no-verify]

writes <folder>/model.onnx atomically (a temporary file in the same folder, flushed, then renamed
over the old one), after onnx.checker has passed and ONNX Runtime has reproduced PyTorch's output.

The graph's interface is the contract of runtime.py: the inputs the architecture declares (names,
dtypes, shapes; `x` and `t` first), output `out`, the "batch" axis dynamic. metadata_props record
the checkpoint format, the architecture and its network config, and a sha256 of the weights, so the
loader refuses a graph that no longer matches model.safetensors. `add_metadata` and
`write_model_onnx` need no torch: another exporter (the
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

from diffusion_core.architectures import BATCH, TIMESTEP, ModelInput, optional_inputs
from diffusion_core.config import FORMAT_VERSION

from .runtime import (META_ARCHITECTURE, META_EXPORTER, META_FORMAT_VERSION, META_NETWORK_CONFIG,
                      META_WEIGHTS_SHA256, RuntimeOptions, load_onnx_model, weights_fingerprint)

# Opset 20 is what torch 2.13's exporter emits natively (asking for less makes it run the ONNX
# version converter afterwards, one more thing that can fail); ONNX Runtime >= 1.17 runs it.
DEFAULT_OPSET = 20
OUTPUT_NAME = "out"
ONNX_FILE = "model.onnx"  # the name diffusion_core/checkpoint.py looks for
VERIFY_TOLERANCE = 1e-4   # max |ORT - PyTorch| accepted after export; float32 reordering is ~1e-6
TRACE_BATCH = 2


@dataclass(frozen=True)
class ExportResult:
    path: Path
    opset: int
    size_bytes: int
    max_abs_diff: Optional[float]   # ORT vs PyTorch on a random batch; None when not verified


def add_metadata(model, config: ModelConfig, weights: Mapping[str, np.ndarray], exporter: str) -> None:
    """Stamp an onnx.ModelProto with what it was exported from (see runtime.check_provenance)."""
    stamps = {META_FORMAT_VERSION: str(FORMAT_VERSION),
              META_ARCHITECTURE: config.architecture.name,
              META_NETWORK_CONFIG: config.network_json(),
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

    One file: weights live inside the protobuf, which caps a model at 2 GB; the default Unet is ~4 MB.
    """
    import onnx
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    if len(data) >= 2**31:
        raise ValueError("the graph with its weights exceeds protobuf's 2 GB limit for one file")
    return data


def example_inputs(declared: Sequence[ModelInput], batch: int = TRACE_BATCH) -> list[np.ndarray]:
    """One array per declared input, at `batch`, to trace a graph with. Not batch 0 or 1:
    torch.export specialises a dimension it sees as 0 or 1 to a constant. t is fractional, so a
    graph that rounds it would show in verification."""
    arrays = []
    for spec in declared:
        shape = spec.concrete_shape(batch)
        arrays.append(np.full(shape, 10.5, np.float32) if spec.role == TIMESTEP
                      else (spec.default(batch) if spec.optional else np.zeros(shape, spec.dtype)))
    return arrays


def export_pytorch_network(network, config: ModelConfig, opset: int = DEFAULT_OPSET):
    """The network as an onnx.ModelProto, its inputs and dynamic axes from the declaration.

    torch 2.13 exports through torch.export (the "dynamo" exporter, which needs onnxscript).
    external_data=False keeps the weights inside the one file instead of a sidecar .data file.
    """
    import torch

    network = network.eval()
    declared = config.inputs
    args = tuple(torch.from_numpy(a) for a in example_inputs(declared))
    batch = torch.export.Dim(BATCH, min=1, max=65536)
    # positional, so the network's argument names do not matter; every "batch" axis is dynamic
    dynamic_shapes = _as_signature(network.forward, [{axis: batch for axis, d in enumerate(spec.shape)
                                                      if d == BATCH} for spec in declared])
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
            program = torch.onnx.export(network, args, dynamo=True,
                                        input_names=[spec.name for spec in declared],
                                        output_names=[OUTPUT_NAME], dynamic_shapes=dynamic_shapes,
                                        opset_version=opset, external_data=False, optimize=True,
                                        verbose=False)
        finally:
            registration.setLevel(level)
    return program.model_proto


def _as_signature(forward, per_input: list) -> tuple:
    """Per-input dynamic shapes in the structure torch.export binds the arguments to: a network
    that takes its optional inputs as *inputs receives them as one tuple."""
    import inspect
    structure, i = [], 0
    for param in inspect.signature(forward).parameters.values():
        if i >= len(per_input):
            break
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            structure.append(tuple(per_input[i:]))
            i = len(per_input)
        else:
            structure.append(per_input[i])
            i += 1
    return tuple(structure)


def write_model_onnx(folder: str | os.PathLike, data: bytes) -> Path:
    """Put data at folder/model.onnx atomically: readers see the old file or the new, never half.

    The temporary file sits in the same folder (so the rename cannot cross file systems) and is
    removed if anything fails, because checkpoint saving refuses folders holding foreign files.
    """
    return write_atomically(Path(folder) / ONNX_FILE, data, durable=True)


def max_difference(data: bytes, config: ModelConfig, weights: Mapping[str, np.ndarray], reference,
                   batch: int = 3) -> float:
    """Run the graph in ONNX Runtime and `reference(x, t, **inputs) -> NumPy` (the framework the
    graph came from) on one random batch at three timesteps (one fractional), with random values
    for every optional input; the max abs difference."""
    model = load_onnx_model(data, config, weights, RuntimeOptions(device="cpu"), where="the new graph")
    rng = np.random.default_rng(0)
    sample, extra = config.inputs[0], optional_inputs(config.inputs)
    worst = 0.0
    for t in (0.0, 421.5, config.diffusion.num_train_timesteps - 1.0):
        x = rng.standard_normal(sample.concrete_shape(batch), dtype=np.float32)
        inputs = {spec.name: random_input(spec, batch, rng) for spec in extra}
        worst = max(worst, float(np.abs(model(x, t, **inputs) - reference(x, t, **inputs)).max()))
    return worst


def random_input(spec: ModelInput, batch: int, rng: np.random.Generator) -> np.ndarray:
    """Test values for an optional input: Gaussian floats, or integers up to and including the fill
    value (for class labels: every class and the null class)."""
    shape = spec.concrete_shape(batch)
    if spec.dtype == "int64":
        return rng.integers(0, int(spec.fill or 0) + 1, size=shape, dtype=np.int64)
    return rng.standard_normal(shape, dtype=np.float32)


def verify_against_pytorch(data: bytes, network, config: ModelConfig,
                           weights: Mapping[str, np.ndarray], batch: int = 3) -> float:
    """max_difference with the PyTorch network behind its model adapter as the reference."""
    from backends.pytorch import TorchDenoiserModel
    model = TorchDenoiserModel(network, config.inputs, device="cpu")

    def reference(x, t, **inputs):
        return model(model.ops.asarray(x), t, **{k: model.ops.asarray(v) for k, v in inputs.items()}).numpy()
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

    from backends import build_network
    from backends.pytorch import load_state_from_numpy

    network = build_network("pytorch", config.network)
    load_state_from_numpy(network, weights)
    model = export_pytorch_network(network, config, opset)
    add_metadata(model, config, weights, exporter=f"torch {torch.__version__} torch.onnx.export(dynamo=True)")
    data = serialize_checked(model)
    diff = None
    if verify:
        diff = verify_against_pytorch(data, network.eval(), config, weights)
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
        description="Export a checkpoint folder's network to <folder>/model.onnx for ONNX Runtime.")
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
