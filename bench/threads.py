"""How many PyTorch threads to use: sampling time with 1, 2, ... threads, each in a fresh process.

    python bench/threads.py [--threads 1,2] [--batch 16] [--steps 10]

Run it twice: with the other cores idle, and while they are busy (a training run, another
request, CI). The default thread rule (backends/threads.py) is chosen from both.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads({threads})
from backends import load_model
model = load_model("pytorch", {model!r}, device="cpu")
model.sample(batch_size={batch}, sampler="dpmpp_2m", steps=2, seed=0)
times = []
for _ in range(3):
    start = time.perf_counter()
    model.sample(batch_size={batch}, sampler="dpmpp_2m", steps={steps}, seed=0)
    times.append(time.perf_counter() - start)
print(json.dumps(sorted(times)[1]))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--model", default=str(ROOT / "models" / "default"))
    args = p.parse_args()
    results = {}
    for threads in (int(t) for t in args.threads.split(",")):
        code = CHILD.format(root=str(ROOT), threads=threads, model=args.model, batch=args.batch, steps=args.steps)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": str(threads)}, check=True)
        results[threads] = json.loads(out.stdout.strip().splitlines()[-1])
    base = results[min(results)]
    print(f"{os.cpu_count()} CPUs (affinity {len(os.sched_getaffinity(0))}); batch {args.batch}, "
          f"{args.steps} DPM-Solver++ steps, median of 3")
    for threads, seconds in results.items():
        print(f"  {threads} thread(s): {seconds:.2f} s ({seconds / base:.2f}x the {min(results)}-thread time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
