"""Class-conditional sampling and image-to-image on a model, by the project's yardstick.

    python bench/conditional_quality.py [--model models/default] [--samples-per-class 50]

1. Guidance: for each scale (--scales, default 1,2,3,5,7.5) it draws --samples-per-class images of
   every class (same seeds for every scale) and reports the shipped classifier's accuracy on the
   requested class, per class and on average, the FD of each class's images against that class's
   test images, and the FD of all of them against the whole test set (diversity falls as w grows).
2. Image-to-image: from --i2i-images test images, for each strength (--strengths), the FD of the
   redrawn images against the test set and their mean absolute distance to the input (in [-1, 1]).

Writes conditional.md, conditional.json and conditional.png (accuracy and FD against the guidance
scale) into --out.
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
from diffusion_core.quality import frechet_distance, load_classifier  # noqa: E402
from diffusion_core.quality.evaluate import class_accuracy, generate, measure  # noqa: E402


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, left = plt.subplots(figsize=(7, 4.2), dpi=120)
    scales = [r["scale"] for r in rows]
    left.plot(scales, [100 * r["accuracy"] for r in rows], marker="o", color="tab:blue", label="accuracy")
    left.set_xlabel("guidance scale w")
    left.set_ylabel("classifier accuracy on the requested class (%)", color="tab:blue")
    right = left.twinx()
    right.plot(scales, [r["fd_per_class"] for r in rows], marker="s", color="tab:red", label="FD per class")
    right.plot(scales, [r["fd_all"] for r in rows], marker="^", color="tab:orange", label="FD, all classes")
    right.set_ylabel("Frechet distance", color="tab:red")
    fig.legend(loc="lower center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "models" / "default"))
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--sampler", default="dpmpp_2m")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--samples-per-class", type=int, default=50)
    p.add_argument("--scales", type=floats, default=[1.0, 2.0, 3.0, 5.0, 7.5])
    p.add_argument("--strengths", type=floats, default=[0.2, 0.4, 0.6, 0.8, 1.0])
    p.add_argument("--i2i-images", type=int, default=500)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args()

    model = load_model(args.backend, args.model)
    classifier = load_classifier()
    test = load_fashion_mnist("test")
    names = list(test.class_names)
    test_feats = classifier.features(test.images)
    per_class_feats = [test_feats[test.labels == c] for c in range(len(names))]
    labels = np.repeat(np.arange(len(names)), args.samples_per_class)
    rows = []
    for scale in args.scales:
        start = time.perf_counter()
        images = generate(model, args.sampler, args.steps, len(labels), args.batch, seed=0,
                          class_labels=labels, guidance_scale=scale)
        accuracy = class_accuracy(classifier, images, labels)
        feats = classifier.features(images)
        fd_class = [frechet_distance(feats[labels == c], per_class_feats[c]) for c in range(len(names))]
        row = {"scale": scale, "accuracy": float(np.mean(accuracy)), "per_class_accuracy": accuracy.tolist(),
               "fd_per_class": float(np.mean(fd_class)), "per_class_fd": fd_class,
               "fd_all": measure(classifier, images, test_feats)["fd"], "seconds": time.perf_counter() - start}
        rows.append(row)
        print(f"w {scale:>4g}: accuracy {row['accuracy']:.1%}, FD per class {row['fd_per_class']:.2f}, "
              f"FD all {row['fd_all']:.2f} ({row['seconds']:.0f} s)", flush=True)
    i2i = []
    inputs = test.images[:args.i2i_images]
    for strength in args.strengths:
        out = np.concatenate([model.sample(batch_size=len(chunk), sampler=args.sampler, steps=args.steps,
                                           seed=b, init_image=chunk, strength=strength)
                              for b, chunk in enumerate(np.array_split(inputs, max(1, len(inputs) // args.batch)))])
        out = np.clip(out, -1, 1)
        row = {"strength": strength, "fd": measure(classifier, out, test_feats)["fd"],
               "distance": float(np.abs(out - inputs).mean())}
        i2i.append(row)
        print(f"strength {strength:g}: FD {row['fd']:.2f}, mean |output - input| {row['distance']:.3f}", flush=True)

    folder = Path(args.out)
    meta = {"model": str(args.model), "backend": args.backend, "sampler": args.sampler, "steps": args.steps,
            "samples_per_class": args.samples_per_class, "i2i_images": len(inputs)}
    write_atomically(folder / "conditional.json", json.dumps({"meta": meta, "guidance": rows,
                                                              "image_to_image": i2i}, indent=2).encode())
    lines = [f"Guidance: {args.samples_per_class} samples per class, {args.sampler} {args.steps} steps on "
             f"{args.backend}; accuracy = the shipped classifier agrees with the requested class.", "",
             "| w | accuracy | FD per class | FD all | " + " | ".join(names) + " |",
             "|---|---|---|---|" + "---|" * len(names)]
    for r in rows:
        lines.append(f"| {r['scale']:g} | {r['accuracy']:.1%} | {r['fd_per_class']:.2f} | {r['fd_all']:.2f} | "
                     + " | ".join(f"{a:.0%}" for a in r["per_class_accuracy"]) + " |")
    lines += ["", f"Image-to-image from {len(inputs)} test images:", "",
              "| strength | FD | mean abs distance to input |",
              "|---|---|---|"] + [f"| {r['strength']:g} | {r['fd']:.2f} | {r['distance']:.3f} |" for r in i2i]
    write_atomically(folder / "conditional.md", ("\n".join(lines) + "\n").encode())
    plot(rows, folder / "conditional.png")
    print(f"wrote {folder / 'conditional.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
