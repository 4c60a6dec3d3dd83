"""What the bf16 fast path buys and costs on a model: PyTorch autocast against float32, same run.

    OMP_NUM_THREADS=1 python bench/bf16.py [--model-dir models/default] [--images 256]

Draws the same images (same seeds) in float32 and in bf16 and reports the speed ratio (16 images
per call, interleaved rounds, medians), the difference in 8-bit levels (mean, and the share of
pixels moved by more than 4 levels), how often the shipped classifier gives both versions of an
image the same class, and the FD of both sets against the test set. Prints the CPU's bf16 / AMX
flags, which decide whether bf16 pays. Writes bf16.json into --out.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends import load_model  # noqa: E402
from diffusion_core.data import load_fashion_mnist  # noqa: E402
from diffusion_core.files import write_atomically  # noqa: E402
from diffusion_core.quality import load_classifier  # noqa: E402
from diffusion_core.quality.evaluate import measure  # noqa: E402
from diffusion_core.cpu import cpu_flags  # noqa: E402


def levels(images: np.ndarray) -> np.ndarray:
    return np.round((np.clip(images, -1, 1) + 1) * 127.5)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default=str(ROOT / "models" / "default"))
    p.add_argument("--sampler", default="dpmpp_2m")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3, help="timed 16-image calls per precision")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args()

    models = {precision: load_model("pytorch", args.model_dir, device="cpu", precision=precision)
              for precision in ("fp32", "bf16")}
    run = dict(sampler=args.sampler, steps=args.steps)
    times = {precision: [] for precision in models}
    for _ in range(args.rounds + 1):   # the first round warms up
        for precision, model in models.items():
            start = time.perf_counter()
            model.sample(batch_size=16, seed=1, **run)
            times[precision].append(time.perf_counter() - start)
    seconds = {precision: float(np.median(t[1:])) for precision, t in times.items()}
    images = {precision: np.concatenate([model.sample(batch_size=64, seed=b, **run)
                                         for b in range(max(1, args.images // 64))])
              for precision, model in models.items()}
    moved = np.abs(levels(images["bf16"]) - levels(images["fp32"]))
    classifier = load_classifier()
    same_class = float(np.mean(classifier.probabilities(images["bf16"]).argmax(1)
                              == classifier.probabilities(images["fp32"]).argmax(1)))
    test_feats = classifier.features(load_fashion_mnist("test").images)
    fd = {precision: measure(classifier, imgs, test_feats)["fd"] for precision, imgs in images.items()}
    result = {"cpu_flags": cpu_flags(), "sampler": args.sampler, "steps": args.steps,
              "images": int(len(moved)), "seconds_16_images": seconds,
              "speedup": seconds["fp32"] / seconds["bf16"], "mean_level_difference": float(moved.mean()),
              "share_moved_over_4_levels": float(np.mean(moved > 4)), "classifier_agreement": same_class,
              "fd": fd}
    print(f"CPU flags: {result['cpu_flags']}")
    print(f"16 images, {args.sampler} {args.steps} steps: fp32 {seconds['fp32']:.2f} s, bf16 "
          f"{seconds['bf16']:.2f} s -> bf16 {result['speedup']:.2f}x faster")
    print(f"{len(moved)} images: mean difference {moved.mean():.2f} of an 8-bit level, "
          f"{100 * np.mean(moved > 4):.2f}% of pixels moved by more than 4 levels, classifier "
          f"agrees on {100 * same_class:.1f}%; FD fp32 {fd['fp32']:.2f}, bf16 {fd['bf16']:.2f}")
    write_atomically(Path(args.out) / "bf16.json", json.dumps(result, indent=2).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
