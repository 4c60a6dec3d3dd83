"""FD of unconditional samples (a class-conditional model's null class) for several models and
spacings in one run: the protocol behind bench/results/null_class.md (issue 13 asks that the shipped
class-conditional model's null class be at least as good as the previous unconditional model).

    .venv/bin/python bench/null_class_fd.py models/default /tmp/old-default-model --spacing logsnr trailing

The previous model: `mkdir -p /tmp/old && git archive 1180657^ models/default | tar -x -C /tmp/old &&
mv /tmp/old/models/default /tmp/old-default-model`. One thread (the
thread rule); about 5 minutes per model and spacing on 2 cores.
"""
import argparse
import json
import time

import torch

from backends import load_model
from diffusion_core.cpu import cpu_flags
from diffusion_core.data import load_fashion_mnist
from diffusion_core.files import write_atomically
from diffusion_core.quality import load_classifier
from diffusion_core.quality.evaluate import generate, measure


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="checkpoint folders")
    p.add_argument("--spacing", nargs="+", default=["logsnr"])
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--json", default=None, help="write the rows here")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    classifier = load_classifier()
    reference = classifier.features(load_fashion_mnist("test").images)
    rows = []
    for path in args.models:
        model = load_model("pytorch", path)
        for spacing in args.spacing:
            start = time.perf_counter()
            images = generate(model, "dpmpp_2m", 20, args.samples, 100, args.seed, spacing=spacing)
            row = {"model": path, "spacing": spacing, "seed": args.seed, **measure(classifier, images, reference),
                   "seconds": round(time.perf_counter() - start, 1)}
            print(f"{path}  {spacing:9s}  seed {args.seed}  FD {row['fd']:.2f}  KID {row['kid']:.3f}", flush=True)
            rows.append(row)
    if args.json:
        write_atomically(args.json, json.dumps({"cpu": cpu_flags(), "rows": rows}, indent=1).encode())


if __name__ == "__main__":
    main()
