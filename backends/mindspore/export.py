"""Export a checkpoint's network from MindSpore to ONNX, with the interface of the PyTorch export.

    python -m backends.mindspore.export <checkpoint-folder> [--no-verify] [--output PATH]

writes <folder>/model.onnx (or PATH) atomically after onnx.checker has passed and ONNX Runtime has
reproduced MindSpore's output. Inputs as the architecture declares them (`x`, `t`, then its
optional inputs), output `out`, batch dynamic: the contract of backends/onnx/runtime.py, stamped
with the same provenance metadata (backends/onnx/export.add_metadata), so ONNX Runtime loads it.

What MindSpore 2.10's exporter needs, and how it is met:
  * no ONNX GroupNorm and no nearest resize: the Unet is switched to its decomposed spelling
    (Unet.set_decomposed: GroupNorm from reshape/mean/sqrt, upsampling from stack + reshape);
  * Conv2dTranspose exports but ONNX Runtime refuses it: the Unet has none (nearest + conv);
  * mindspore.export refuses dynamic-shape inputs for ONNX ("Export ONNX format model not
    support dynamic shape mode"), so the graph is traced at batch 2 and its batch axis renamed to
    a symbolic dimension afterwards. That is valid because every reshape in the Unet keeps the
    batch as -1: no node holds the traced batch size (tests run batches 1 and 3).
  * the graph's names are MindSpore's (the construct arguments, a numbered output): renamed.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence


from diffusion_core.architectures import BATCH
from diffusion_core.config import ModelConfig

VERIFY_TOLERANCE = 1e-4  # max |ORT - MindSpore|; float32 reordering gives ~1e-6


def export_mindspore_network(network, config: ModelConfig):
    """The network as an onnx.ModelProto with a dynamic batch and the declared input names."""
    import mindspore as ms
    import onnx

    from backends.onnx.export import OUTPUT_NAME, TRACE_BATCH, example_inputs

    declared = config.inputs
    args = [ms.Tensor(a) for a in example_inputs(declared, TRACE_BATCH)]
    names = [spec.name for spec in declared]
    # A network whose ops MindSpore's exporter lacks (GroupNorm, nearest resize) has an
    # export-friendly spelling behind set_decomposed (the Unet's blocks.py).
    decompose = getattr(network, "set_decomposed", lambda on: network)
    was_training = network.training
    network.set_train(False)
    decompose(True)
    try:
        with tempfile.TemporaryDirectory() as folder:
            ms.export(network, *args, file_name=os.path.join(folder, "network"), file_format="ONNX")
            model = onnx.load(os.path.join(folder, "network.onnx"))
    finally:
        decompose(False)
        network.set_train(was_training)
    graph = model.graph
    if len(graph.input) != len(names) or len(graph.output) != 1:
        raise RuntimeError(f"MindSpore exported inputs {[i.name for i in graph.input]} and "
                           f"outputs {[o.name for o in graph.output]}; expected {len(names)} "
                           "inputs and one output")
    renames = {old.name: new for old, new in zip(graph.input, names)}
    renames[graph.output[0].name] = OUTPUT_NAME
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value in list(graph.input) + list(graph.output):
        value.name = renames[value.name]
        value.type.tensor_type.shape.dim[0].dim_param = BATCH  # clears the traced dim_value
    # Shapes inferred at the traced batch would contradict the dynamic one; ORT re-infers them.
    del graph.value_info[:]
    return model


def verify_against_mindspore(data: bytes, network, config: ModelConfig, weights,
                             batch: int = 3) -> float:
    """max_difference (backends/onnx/export.py) with the MindSpore Unet (normal, not decomposed)
    as the reference."""
    from backends.onnx.export import max_difference

    from .model import MindSporeDenoiserModel
    ms_model = MindSporeDenoiserModel(network, config.inputs, graph=False)

    def reference(x, t, **inputs):
        return ms_model(ms_model.ops.asarray(x), t,
                        **{k: ms_model.ops.asarray(v) for k, v in inputs.items()}).asnumpy()
    return max_difference(data, config, weights, reference, batch)


def export_checkpoint(folder: str | os.PathLike, verify: bool = True,
                      output: Optional[str | os.PathLike] = None) -> tuple[Path, Optional[float]]:
    """Export the checkpoint in folder to folder/model.onnx (or output); returns (path, max abs
    difference ORT vs MindSpore or None). Refuses a graph that fails onnx.checker or differs by
    more than VERIFY_TOLERANCE."""
    import mindspore as ms

    from backends.onnx.export import add_metadata, serialize_checked, write_model_onnx
    from diffusion_core.checkpoint import load_checkpoint

    from .model import build_network, load_state_from_numpy
    checkpoint = load_checkpoint(folder)
    network = build_network(checkpoint.config.network)
    load_state_from_numpy(network, checkpoint.weights)
    model = export_mindspore_network(network, checkpoint.config)
    add_metadata(model, checkpoint.config, checkpoint.weights,
                 exporter=f"mindspore {ms.__version__} mindspore.export(file_format='ONNX')")
    data = serialize_checked(model)
    diff = None
    if verify:
        diff = verify_against_mindspore(data, network, checkpoint.config, checkpoint.weights)
        if not diff <= VERIFY_TOLERANCE:
            raise RuntimeError(f"the exported graph differs from MindSpore by {diff:.3g} (more "
                               f"than {VERIFY_TOLERANCE}); not writing it")
    if output is None:
        return write_model_onnx(checkpoint.folder, data), diff
    path = Path(output)
    path.write_bytes(data)
    return path, diff


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m backends.mindspore.export",
        description="Export a checkpoint folder's network from MindSpore to <folder>/model.onnx.")
    parser.add_argument("folder", help="checkpoint folder holding config.json and model.safetensors")
    parser.add_argument("--output", help="write here instead of <folder>/model.onnx")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the ONNX Runtime vs MindSpore comparison after export")
    args = parser.parse_args(argv)
    from diffusion_core.checkpoint import CheckpointError
    try:
        path, diff = export_checkpoint(args.folder, verify=not args.no_verify, output=args.output)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    checked = "" if diff is None else f"; ONNX Runtime matches MindSpore to {diff:.2g}"
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB){checked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
