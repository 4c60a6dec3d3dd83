"""Allocator settings against each other: sampling and training-step time, and page faults.

    python bench/allocator.py [--rounds 2] [--steps 10] [--batch 16] [--train-batch 64]

Each (allocator, round) is a fresh process at 1 thread, run interleaved (default, tuned, jemalloc,
tcmalloc, default, ...) so a load change on the machine hits every setting alike; the median over
rounds counts and times are printed as ratios to glibc's defaults measured in the same run.
  default   glibc as it starts (DIFFUSION_TOOLKIT_MALLOC=default turns off the toolkit's tuning)
  tuned     diffusion_core/allocator.py's mallopt settings (what the toolkit does by itself)
  jemalloc  Debian's libjemalloc2 through LD_PRELOAD, if installed
  tcmalloc  Debian's libtcmalloc-minimal4 through LD_PRELOAD, if installed
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBS = {"jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
        "tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"}
CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
import numpy as np, torch
torch.set_num_threads(1)
from backends import load_model
model = load_model("pytorch", {model!r}, device="cpu")   # tunes glibc unless told not to
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
model.sample(batch_size={batch}, sampler="dpmpp_2m", steps=2, seed=0)
f0, t0 = faults(), time.perf_counter()
model.sample(batch_size={batch}, sampler="dpmpp_2m", steps={steps}, seed=0)
sample_s, sample_faults = time.perf_counter() - t0, faults() - f0
net = model.model.network if hasattr(model.model, "network") else None
out = {{"sample_s": sample_s, "sample_faults": sample_faults}}
if net is not None:
    # one training step's forward+backward+Adam on random data, as the trainer's engine does
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.randn({train_batch}, *model.config.sample_shape); t = torch.randint(0, 1000, ({train_batch},))
    def step():
        opt.zero_grad(); net(x, t).float().pow(2).mean().backward(); opt.step()
    step()
    f0, t0 = faults(), time.perf_counter()
    for _ in range(3):
        step()
    out.update(train_step_s=(time.perf_counter() - t0) / 3, train_faults=(faults() - f0) / 3)
print(json.dumps(out))
"""


def child_env(name: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")
           and k not in ("GLIBC_TUNABLES", "LD_PRELOAD", "DIFFUSION_TOOLKIT_MALLOC")}
    env["OMP_NUM_THREADS"] = "1"
    if name == "default":
        env["DIFFUSION_TOOLKIT_MALLOC"] = "default"
    elif name in LIBS:
        env["LD_PRELOAD"] = LIBS[name]
    return env


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--train-batch", type=int, default=64)
    p.add_argument("--model", default=str(ROOT / "models" / "default"))
    args = p.parse_args()
    names = ["default", "tuned"] + [n for n, lib in LIBS.items() if Path(lib).exists()]
    code = CHILD.format(root=str(ROOT), model=args.model, batch=args.batch, steps=args.steps,
                        train_batch=args.train_batch)
    results: dict[str, list[dict]] = {n: [] for n in names}
    print(f"load average before: {os.getloadavg()}; {os.cpu_count()} cores; 1 thread per process")
    for _ in range(args.rounds):
        for name in names:
            out = subprocess.run([sys.executable, "-c", code], env=child_env(name), cwd=ROOT,
                                 capture_output=True, text=True, check=True)
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"load average after:  {os.getloadavg()}")
    med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in results.items()}
    ref = med["default"]
    print(f"{'allocator':<10} {'sample s':>9} {'x faster':>9} {'faults':>9} {'train s':>8} {'x faster':>9} {'faults':>8}")
    for n, m in med.items():
        print(f"{n:<10} {m['sample_s']:>9.3f} {ref['sample_s'] / m['sample_s']:>9.2f} {m['sample_faults']:>9.0f} "
              f"{m['train_step_s']:>8.3f} {ref['train_step_s'] / m['train_step_s']:>9.2f} {m['train_faults']:>8.0f}")
    print(json.dumps({"args": vars(args), "median": med}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
