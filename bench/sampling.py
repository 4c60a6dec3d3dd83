"""Sampling speed of the PyTorch backend: images/s for every sampler at one step count.

    python bench/sampling.py                                 # default Unet, 28x28, batch 16, 20 steps
    python bench/sampling.py --device cuda --steps 50 --checkpoint runs/fashion/model
    python bench/sampling.py --threads 1 --samplers ddim,dpmpp_2m

Goes through the same path as the app: diffusion_core.sample with a TorchDenoiserModel and TorchOps,
NumPy noise handed over per step. Without --checkpoint the weights are freshly initialised: speed
does not depend on them (denormals aside, which the model flushes). Each sampler runs once untimed
first. Heun evaluates the model 2 * steps - 1 times, the others once per step.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from backends.pytorch import distributed  # noqa: E402
from backends import build_network  # noqa: E402
from backends.pytorch.model import TorchDenoiserModel, load_state_from_numpy  # noqa: E402
from backends.pytorch.train import configure_torch  # noqa: E402
from diffusion_core import list_samplers, sample  # noqa: E402
from diffusion_core.config import ModelConfig  # noqa: E402
from diffusion_core.samplers import get_sampler  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a checkpoint folder (default: the default config, random weights)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--samplers", default=",".join(list_samplers()))
    p.add_argument("--repeats", type=int, default=1, help="timed calls per sampler (the best counts)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: every core this process may use)")
    args = p.parse_args()

    device = distributed.pick_device(args.device)
    threads = configure_torch(device, args.threads, 1)
    if args.checkpoint:
        from diffusion_core.checkpoint import load_checkpoint
        ckpt = load_checkpoint(args.checkpoint)
        config, unet = ckpt.config, build_network("pytorch", ckpt.config.network)
        load_state_from_numpy(unet, ckpt.weights)
    else:
        config = ModelConfig()
        torch.manual_seed(0)
        unet = build_network("pytorch", config.network)
    model = TorchDenoiserModel(unet, config.inputs, device)
    schedule = config.diffusion.make_schedule()
    u = config.network
    shape = (args.batch_size, *config.sample_shape)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {threads} thread(s)"
    print(f"{name}, torch {torch.__version__}; Unet {u.image_size}x{u.image_size}x{u.channels} dim {u.dim} "
          f"dim_mults {list(u.dim_mults)}; batch {args.batch_size}, {args.steps} steps")
    print(f"{'sampler':<16} {'model evals':>11} {'seconds':>9} {'images/s':>9} {'ms/eval':>8}")

    def run(sampler: str) -> None:
        sample(model, schedule, sampler=sampler, steps=args.steps, shape=shape, seed=0, ops=model.ops,
               prediction_type=config.diffusion.prediction_type, model_inputs=config.inputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # to_numpy already waits; kept for clarity

    for sampler in args.samplers.split(","):
        evals = get_sampler(sampler).model_evaluations(args.steps)
        run(sampler)  # warm-up: kernels chosen, caches filled
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            run(sampler)
            best = min(best, time.perf_counter() - start)
        print(f"{sampler:<16} {evals:>11} {best:>9.3f} {args.batch_size / best:>9.1f} {1e3 * best / evals:>8.2f}")


if __name__ == "__main__":
    main()
