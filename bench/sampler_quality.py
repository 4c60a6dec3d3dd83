"""FD / KID on the shipped classifier against the number of model calls, per sampler and spacing.

    OMP_NUM_THREADS=1 python -m bench.sampler_quality --model-dir models/default --samples 500
    python -m bench.sampler_quality --samples 16 --calls 5,10 --samplers unipc,dpmpp_2m   # smoke run

Every (sampler, spacing) pair is run at each budget of model calls (Heun takes (calls + 1) // 2
steps, as it calls the model 2 steps - 1 times); "recommended" is the sampler's own settings
(samplers.recommended_settings: the registry's, or the model's fitted timesteps where it has them),
"optimized" only the fitted ones (cells without a fit are skipped). --threads 1 keeps the run on one
core (ONNX Runtime would take them all). Writes sampler_quality.json and sampler_quality.png (FD against calls,
one line per sampler and spacing) into --out. Same seed for every cell.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


from bench.quality import plot, reference_and_floor
from backends import load_model
from diffusion_core.cpu import cpu_flags
from diffusion_core import SAMPLERS
from diffusion_core.files import write_atomically
from diffusion_core.quality import load_classifier
from diffusion_core.quality.evaluate import generate, measure

ROOT = Path(__file__).resolve().parents[1]


def open_model(backend: str, folder: str, threads):
    if threads is None:
        return load_model(backend, folder)
    if backend == "onnxruntime":
        from backends.onnx.backend import OnnxRuntimeBackend
        from backends.onnx.runtime import RuntimeOptions
        from diffusion_core.checkpoint import load_checkpoint
        return OnnxRuntimeBackend(RuntimeOptions(threads=threads)).load(load_checkpoint(folder))
    import torch
    torch.set_num_threads(threads)
    return load_model(backend, folder)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", default=str(ROOT / "models" / "default"))
    p.add_argument("--backend", default="pytorch")
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--calls", default="5,8,10,15,20,50")
    p.add_argument("--samplers", default=",".join(SAMPLERS))
    p.add_argument("--spacings", default="recommended,trailing,logsnr")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the backend's)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--append", action="store_true",
                   help="add to the rows already in --out's sampler_quality.json (same model, samples, seed); "
                        "a cell measured again replaces its old row")
    args = p.parse_args(argv)
    loaded = open_model(args.backend, args.model_dir, args.threads)
    classifier = load_classifier()
    reference, floor = reference_and_floor(classifier, args.samples, args.seed)
    results = []
    for sampler in args.samplers.split(","):
        spec = SAMPLERS[sampler]
        for spacing in args.spacings.split(","):
            options = {} if spacing == "recommended" else {"spacing": spacing}
            for calls in (int(c) for c in args.calls.split(",")):
                steps = (calls + 1) // 2 if sampler == "heun" else calls
                t0 = time.perf_counter()
                try:
                    images = generate(loaded, sampler, steps, args.samples, args.batch, args.seed, **options)
                except ValueError as error:   # e.g. logsnr steps that collide on integer timesteps
                    print(f"{sampler} {spacing} {calls} calls: {error}")
                    continue
                row = {"sampler": f"{sampler} {spacing}", "steps": steps, "nfe": spec.model_evaluations(steps),
                       "seconds": round(time.perf_counter() - t0, 2), **measure(classifier, images, reference)}
                print(f"{row['sampler']:28s} {row['nfe']:4d} calls  FD {row['fd']:7.2f}  KID {row['kid']:.4f}")
                results.append(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"model": args.model_dir, "backend": args.backend, "samples": args.samples, "seed": args.seed,
            "threads": args.threads, "cpu": cpu_flags()}
    if args.append and (out / "sampler_quality.json").is_file():
        before = json.loads((out / "sampler_quality.json").read_text())
        same = {k: before["meta"].get(k) for k in ("model", "samples", "seed")}
        if same != {k: meta[k] for k in same}:
            raise SystemExit(f"--append: {out / 'sampler_quality.json'} holds another run ({same}); "
                             "use another --out")
        new_cells = {(r["sampler"], r["steps"]) for r in results}
        results = [r for r in before["results"] if (r["sampler"], r["steps"]) not in new_cells] + results
    write_atomically(out / "sampler_quality.json",
                     json.dumps({"meta": meta, "floor": floor, "results": results}, indent=1).encode())
    plot(results, floor["fd"], out / "sampler_quality.png", f"{args.samples} samples, {args.model_dir}")


if __name__ == "__main__":
    main()
