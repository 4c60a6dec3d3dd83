"""Sample quality per sampler and step count on a model, by the project's yardstick.

    python bench/quality.py [--model models/default] [--samples 1000] [--steps 10,20,50,100]

For each sampler and step count, draws --samples images (same seed for all) and measures the
Frechet distance (FD) and KID between their classifier features and those of the Fashion-MNIST
test set (diffusion_core/quality). The floor is the same measure for --samples real training
images. Prints a table and writes quality.md, quality.json and quality.png (FD against the number
of model evaluations, one line per sampler) into --out. --option KEY=VALUE (repeatable) passes a
sampler option to every run, e.g. `--samplers heun --option karras_sigmas=true --no-ddpm-1000`.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends import load_model  # noqa: E402
from diffusion_core import SAMPLERS  # noqa: E402
from diffusion_core.data import load_fashion_mnist  # noqa: E402
from diffusion_core.files import write_atomically  # noqa: E402
from diffusion_core.quality import load_classifier  # noqa: E402
from diffusion_core.quality.evaluate import generate, measure  # noqa: E402


def plot(results: list[dict], floor: float, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for sampler in dict.fromkeys(r["sampler"] for r in results):
        rows = sorted((r for r in results if r["sampler"] == sampler), key=lambda r: r["nfe"])
        ax.plot([r["nfe"] for r in rows], [r["fd"] for r in rows], marker="o", label=sampler)
    ax.axhline(floor, color="grey", linestyle="--", label="real vs real (floor)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("model evaluations")
    ax.set_ylabel("Frechet distance (classifier features)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_atomically(path, buffer.getvalue())


def markdown(results: list[dict], floor: dict, steps: list[int], meta: dict) -> str:
    lines = [f"Model `{meta['model']}` on {meta['backend']} ({meta['device']}), {meta['samples']} samples "
             f"per cell against the {meta['reference']} Fashion-MNIST test images; floor (real training "
             f"images): FD {floor['fd']:.2f}, KID {floor['kid']:.3f}."
             + (f" Sampler options: {meta['options']}." if meta.get("options") else ""), "",
             "FD (lower is better; model evaluations in brackets):", "",
             "| sampler | " + " | ".join(f"{s} steps" for s in steps) + " |",
             "|---|" + "---|" * len(steps)]
    for sampler in dict.fromkeys(r["sampler"] for r in results):
        cells = []
        for s in steps:
            r = next((r for r in results if r["sampler"] == sampler and r["steps"] == s), None)
            cells.append(f"{r['fd']:.2f} ({r['nfe']})" if r else "")
        lines.append(f"| {sampler} | " + " | ".join(cells) + " |")
    extra = [r for r in results if r["steps"] not in steps]
    for r in extra:
        lines.append(f"\n{r['sampler']} at {r['steps']} steps: FD {r['fd']:.2f}, KID {r['kid']:.3f}")
    lines += ["", "KID (x1, unbiased; can be slightly negative at the floor):", "",
              "| sampler | " + " | ".join(f"{s} steps" for s in steps) + " |", "|---|" + "---|" * len(steps)]
    for sampler in dict.fromkeys(r["sampler"] for r in results if r["steps"] in steps):
        cells = [f"{r['kid']:.3f}" for s in steps for r in results if r["sampler"] == sampler and r["steps"] == s]
        lines.append(f"| {sampler} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_option(text: str) -> tuple[str, object]:
    """'karras_sigmas=true' -> ('karras_sigmas', True); numbers become numbers, the rest strings."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--option wants KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value.lower() if value.lower() in ("true", "false") else value)
    except json.JSONDecodeError:
        return key, value



def reference_and_floor(classifier, samples: int, seed: int):
    """The test set's features, and the floor: `samples` real training images measured against
    them (printed), the best a model's samples can score at that count."""
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    reference = classifier.features(test.images)
    pick = np.random.default_rng(seed).choice(len(train), samples, replace=False)
    floor = measure(classifier, train.images[pick], reference)
    print(f"floor (real training images): FD {floor['fd']:.2f}  KID {floor['kid']:.4f}")
    return reference, floor

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "models" / "default"))
    p.add_argument("--backend", default="pytorch")
    p.add_argument("--device", default=None, help="e.g. cuda or cpu (backend default when omitted)")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--steps", default="10,20,50,100")
    p.add_argument("--samplers", default=",".join(SAMPLERS))
    p.add_argument("--no-ddpm-1000", action="store_true", help="skip the DDPM run at T steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a sampler option for every run, e.g. karras_sigmas=true or spacing=leading")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args()
    options = dict(parse_option(o) for o in args.option)

    steps = [int(s) for s in args.steps.split(",")]
    loaded = load_model(args.backend, args.model, device=args.device)
    classifier = load_classifier()
    reference, floor = reference_and_floor(classifier, args.samples, args.seed)
    plan = [(s, n) for s in args.samplers.split(",") for n in steps]
    if not args.no_ddpm_1000:
        plan.append(("ddpm", loaded.config.diffusion.num_train_timesteps))
    results = []
    for sampler, n in plan:
        t0 = time.perf_counter()
        images = generate(loaded, sampler, n, args.samples, args.batch, args.seed, **options)
        seconds = time.perf_counter() - t0
        row = {"sampler": sampler, "steps": n, "nfe": SAMPLERS[sampler].model_evaluations(n),
               "seconds": round(seconds, 2), **measure(classifier, images, reference)}
        results.append(row)
        print(f"{sampler:16s} {n:5d} steps  NFE {row['nfe']:5d}  FD {row['fd']:8.2f}  KID {row['kid']:8.4f}  "
              f"conf {row['median_confidence']:.3f}  {seconds:6.1f} s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"model": os.path.relpath(args.model, ROOT) if Path(args.model).is_absolute() else args.model,
            "backend": args.backend, "device": loaded.device, "samples": args.samples,
            "reference": len(reference), "seed": args.seed, "options": options}
    write_atomically(out / "quality.json", (json.dumps({"meta": meta, "floor": floor, "results": results},
                                                       indent=2) + "\n").encode())
    write_atomically(out / "quality.md", markdown(results, floor, steps, meta).encode())
    plot(results, floor["fd"], out / "quality.png", f"{meta['samples']} samples per point, {meta['device']}")
    print(f"\nwrote {out / 'quality.md'}, quality.json and quality.png")


if __name__ == "__main__":
    main()
