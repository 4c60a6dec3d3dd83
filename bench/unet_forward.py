"""The Unet forward at equal FLOPs: ours against diffusers' UNet2DModel and lucidrains' Unet.

    python bench/unet_forward.py                      # batch 16, 1 thread, 7 rounds
    python bench/unet_forward.py --threads 2 --rounds 9 --json bench/results/unet_forward.json

In one process: the shipped model's network (0.9M parameters, 3.35 GFLOP per batch of 16),
diffusers' UNet2DModel configured to the same FLOPs (widths 16/32/64, two resnets per level,
attention at 7x7: 3.33 GFLOP) and lucidrains' Unet of the same layout (dim 16, mults 1/2/4, full
attention at 7x7), all random-initialised or shipped float32 weights on the same input, under
torch.inference_mode. Variants of ours: as shipped; channels-last memory format; torch.jit
trace + freeze; torch.compile where it works here. FLOPs come from each architecture's
forward_flops (diffusion_core/architectures), so GFLOP/s compare work done, not layer counts.
Rounds alternate the models so that a busy neighbour slows all of them alike; each figure is the
median over rounds of the best of 3 calls. The reference is a 1024^3 fp32 matmul in the same run.
The allocator is tuned first (diffusion_core.allocator, as the toolkit's own processes do), for
every model alike.

Ours runs two layers in an equal but cheaper form than forward_flops counts (the linear attention
regrouped, the upsampling as a transposed conv; backends/pytorch/blocks.py), so its GFLOP/s are
the architecture's FLOPs over the time: a time ratio at equal FLOPs, like the others'.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # foreign_packages: lucidrains' import

import torch  # noqa: E402

from diffusion_core.architectures import get_architecture  # noqa: E402
from diffusion_core.cpu import cpu_flags  # noqa: E402


def matmul_gflops(n: int = 1024, seconds: float = 1.0) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n ** 3 * count / (time.perf_counter() - start) / 1e9


def ours(batch: int):
    from backends import build_network
    from backends.pytorch.model import load_state_from_numpy
    from diffusion_core.checkpoint import load_checkpoint
    from diffusion_core.paths import default_model_dir
    ckpt = load_checkpoint(default_model_dir())
    net = build_network("pytorch", ckpt.config.network).eval()
    load_state_from_numpy(net, ckpt.weights)
    labels = torch.zeros(batch, dtype=torch.int64)
    flops = ckpt.config.architecture.forward_flops(ckpt.config.network, batch)
    return net, (lambda m, x, t: m(x, t, labels)), flops


def diffusers_unet(batch: int):
    from diffusers import UNet2DModel
    from diffusion_core.architectures.diffusers_unet2d import DiffusersUnet2DConfig
    kw = dict(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(16, 32, 64), layers_per_block=2,
              down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
              up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=8, attention_head_dim=8)
    torch.manual_seed(0)
    net = UNet2DModel(**kw).eval()
    flops = get_architecture("diffusers_unet2d").forward_flops(DiffusersUnet2DConfig(**kw), batch)
    return net, (lambda m, x, t: m(x, t).sample), flops


def lucidrains_unet(batch: int):
    from foreign_packages import lucidrains
    Unet = lucidrains().Unet
    from diffusion_core.architectures.lucidrains_unet import LucidrainsUnetConfig
    kw = dict(dim=16, dim_mults=(1, 2, 4), channels=1, full_attn=(False, False, True),
              attn_heads=(4, 4, 4), attn_dim_head=(16, 16, 16))
    torch.manual_seed(0)
    net = Unet(**kw).eval()
    cfg = LucidrainsUnetConfig(image_size=28, **kw)
    return net, (lambda m, x, t: m(x, t)), get_architecture("lucidrains_unet").forward_flops(cfg, batch)


def variants(batch: int) -> dict:
    """name -> (callable(x, t), FLOPs); ours in every form that might win, the two references."""
    x = torch.randn(batch, 1, 28, 28)
    t = torch.full((batch,), 500.0)
    net, call, flops = ours(batch)
    out = {"ours": (lambda x, t: call(net, x, t), flops)}
    import copy
    last = copy.deepcopy(net).to(memory_format=torch.channels_last)
    out["ours channels-last"] = (lambda x, t: call(last, x.contiguous(memory_format=torch.channels_last), t),
                                 flops)
    with torch.inference_mode():
        try:
            labels = torch.zeros(batch, dtype=torch.int64)
            traced = torch.jit.freeze(torch.jit.trace(copy.deepcopy(net), (x, t, labels), check_trace=False))
            out["ours jit-frozen"] = (lambda x, t: traced(x, t, labels), flops)
        except Exception as error:  # noqa: BLE001 - report and go on
            print(f"jit freeze failed: {error!r}"[:200])
    try:
        compiled = torch.compile(copy.deepcopy(net))
        with torch.inference_mode():
            call(compiled, x, t)
        out["ours torch.compile"] = (lambda x, t: call(compiled, x, t), flops)
    except Exception as error:  # noqa: BLE001 - no compiler here, or a graph break it cannot take
        print(f"torch.compile failed here: {type(error).__name__}: {str(error)[:150]}")
    for name, build in (("diffusers UNet2DModel", diffusers_unet), ("lucidrains Unet", lucidrains_unet)):
        ref, ref_call, ref_flops = build(batch)
        out[name] = ((lambda r, c: (lambda x, t: c(r, x, t)))(ref, ref_call), ref_flops)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    from diffusion_core.allocator import tune_allocator
    tune_allocator()
    x = torch.randn(args.batch, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    t = torch.full((args.batch,), 500.0)
    models = variants(args.batch)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for fn, _ in models.values():
            fn(x, t)                                       # warm-up: allocations, oneDNN primitives
        peak = [matmul_gflops()]
        for _ in range(args.rounds):
            for name, (fn, _) in models.items():
                best = float("inf")
                for _ in range(3):
                    start = time.perf_counter()
                    fn(x, t)
                    best = min(best, time.perf_counter() - start)
                times[name].append(best)
            peak.append(matmul_gflops(seconds=0.3))
    load = os.getloadavg()[0]
    peak_rate = statistics.median(peak)
    ref = statistics.median(times["diffusers UNet2DModel"])
    print(f"CPU flags: {cpu_flags()}; torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}; "
          f"load average {load:.2f}; fp32 matmul {peak_rate:.0f} GFLOP/s")
    rows = []
    for name, (_, flops) in models.items():
        sec = statistics.median(times[name])
        rate = flops / sec / 1e9
        rows.append({"model": name, "ms": 1000 * sec, "gflop": flops / 1e9, "gflops": rate,
                     "vs_matmul": rate / peak_rate, "time_vs_diffusers": sec / ref})
        print(f"{name:24s} {1000 * sec:8.1f} ms  {flops / 1e9:5.2f} GFLOP  {rate:6.1f} GFLOP/s "
              f"({100 * rate / peak_rate:3.0f}% of matmul)  time {sec / ref:.2f}x diffusers'")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_flags(), "threads": args.threads, "batch": args.batch,
                                               "load_average": load, "matmul_gflops": peak_rate, "rows": rows},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
