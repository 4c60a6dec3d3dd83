"""What the core's sampling loop costs per step, with the model call taken out.

    python bench/core_overhead.py [--batch 16] [--steps 50] [--repeats 5]

For each sampler, a loop whose model returns a precomputed tensor measures the core alone
(coefficients, x0/eps conversion, clipping, the update, noise draws). Beside it: one call of a
trivial model (a single multiply, the cheapest thing a model can be) and, when PyTorch is
installed, one forward of the default Unet, all on the same 16x1x28x28 batch in the same run.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusion_core import SAMPLERS, make_schedule, sample  # noqa: E402
from diffusion_core.ops import NUMPY  # noqa: E402


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    shape = (args.batch, 1, 28, 28)
    schedule = make_schedule("linear")
    backends = [("numpy", NUMPY)]
    try:
        import torch

        from backends import build_network
        from backends.pytorch import TorchDenoiserModel, TorchOps
        from diffusion_core import UnetConfig
        torch.set_flush_denormal(True)
        torch.set_num_threads(2)
        backends.append(("pytorch", TorchOps("cpu")))
    except ImportError:
        torch = None

    print(f"batch {shape}, {args.steps} steps, best of {args.repeats} (median in brackets)\n")
    unet_time = None
    if torch is not None:
        unet = TorchDenoiserModel(build_network("pytorch", UnetConfig()))
        xt = torch.randn(shape)
        unet(xt, 500.0)
        unet_time, med = best_of(lambda: unet(xt, 500.0), args.repeats)
        print(f"[pytorch] one forward of the default Unet: {unet_time * 1e3:.1f} ms ({med * 1e3:.1f})\n")
    for name, ops in backends:
        fixed = ops.asarray(0.1 * np.random.default_rng(0).standard_normal(shape, dtype=np.float32))
        trivial_best, trivial_med = best_of(lambda: [fixed * 0.5 for _ in range(100)], args.repeats)
        trivial_best, trivial_med = trivial_best / 100, trivial_med / 100
        print(f"[{name}] one call of a trivial model (x * 0.5): {trivial_best * 1e6:8.1f} us "
              f"({trivial_med * 1e6:.1f})")
        print(f"  {'sampler':16s} {'core us/step':>16s} {'x trivial call':>15s} {'% of Unet call':>15s}")
        for sampler in SAMPLERS:
            run = lambda: sample(lambda x_, t, c=None: fixed, schedule, sampler=sampler,  # noqa: E731
                                 steps=args.steps, shape=shape, seed=0, ops=ops)
            best, med = best_of(run, args.repeats)
            per_step = best / SAMPLERS[sampler].model_evaluations(args.steps)
            per_step_med = med / SAMPLERS[sampler].model_evaluations(args.steps)
            share = f"{100 * per_step / unet_time:14.2f}%" if unet_time else f"{'-':>15s}"
            print(f"  {sampler:16s} {per_step * 1e6:8.1f} ({per_step_med * 1e6:6.1f}) "
                  f"{per_step / trivial_best:14.1f}x {share}")


if __name__ == "__main__":
    main()
