"""An imported CIFAR-10-sized diffusers model's forward on every backend, beside diffusers' own.

    python bench/foreign_forward.py --threads 1                 # batch 1, 5 repeats
    python bench/foreign_forward.py --threads 1 --batch 4 --json out.json

A UNet2DModel at google/ddpm-cifar10-32's configuration (35.7M parameters, random weights) is
saved by diffusers, imported (python -m diffusion_core.convert import) and exported to ONNX; then,
in this one process and on the same input, each figure is the median of --repeats timed forwards
after one warm-up call (MindSpore's graph compilation is reported apart): diffusers' UNet2DModel
called directly, and the toolkit's model contract on PyTorch (the same module behind the
adapter), MindSpore (the port of its blocks, graph mode) and ONNX Runtime. Ratios are against
diffusers' time; the largest output difference from diffusers is printed beside each.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import timed  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="threads per framework (0: its default)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    from backends import backend_status, load_model
    from backends.onnx.export import export_checkpoint
    from backends.onnx.runtime import RuntimeOptions
    from diffusers_models import CIFAR10   # the published configuration, kept with the tests
    from diffusion_core.convert import import_checkpoint, open_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    unet = UNet2DModel(**CIFAR10).eval()
    work = Path(tempfile.mkdtemp(prefix="foreign-forward-"))
    unet.save_pretrained(work / "diffusers")
    DDPMScheduler().save_pretrained(work / "diffusers")
    folder = import_checkpoint(work / "diffusers", work / "imported")
    export_checkpoint(folder)
    x = np.random.default_rng(0).standard_normal((args.batch, 3, 32, 32), dtype=np.float32)
    t = 500.0
    with torch.inference_mode():
        reference = unet(torch.from_numpy(x), torch.full((args.batch,), t)).sample.numpy()

    def diffusers_forward():
        with torch.inference_mode():
            unet(torch.from_numpy(x), torch.full((args.batch,), t))

    results = {"diffusers": {"ms": 1000 * timed(diffusers_forward, args.repeats)}}
    for backend in ("pytorch", "mindspore", "onnxruntime"):
        if not backend_status(backend).available:
            results[backend] = {"skipped": backend_status(backend).reason}
            continue
        if backend == "mindspore":
            import backends.mindspore as bm
            bm.prepare("cpu", num_threads=args.threads)
        if backend == "onnxruntime":   # the backend's own options, with --threads
            from backends.onnx.backend import OnnxRuntimeBackend
            model = OnnxRuntimeBackend(RuntimeOptions(threads=args.threads or None)).load(open_checkpoint(folder))
        else:
            model = load_model(backend, folder)
        x_in = model.ops.asarray(x)
        start = time.perf_counter()
        out = model.ops.to_numpy(model.model(x_in, t))   # warm-up: MindSpore compiles its graph here
        first = time.perf_counter() - start
        ms = 1000 * timed(lambda: model.ops.to_numpy(model.model(x_in, t)), args.repeats)
        results[backend] = {"ms": ms, "first_call_ms": 1000 * first,
                            "max_abs_diff": float(np.abs(out - reference).max())}
    base = results["diffusers"]["ms"]
    print(f"forward of a {sum(p.numel() for p in unet.parameters()) / 1e6:.1f}M-parameter UNet2DModel, batch "
          f"{args.batch}, threads {args.threads or 'default'}, median of {args.repeats}")
    for name, r in results.items():
        if "skipped" in r:
            print(f"  {name:12s} skipped: {r['skipped']}")
            continue
        extra = "" if name == "diffusers" else (f"  max |out - diffusers| {r['max_abs_diff']:.1e}"
                                                f"  (first call {r['first_call_ms']:.0f} ms)")
        print(f"  {name:12s} {r['ms']:8.1f} ms  {r['ms'] / base:5.2f}x diffusers{extra}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
