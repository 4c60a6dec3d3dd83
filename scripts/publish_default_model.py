"""Turn a training run into the shipped models/default checkpoint folder.

    python scripts/publish_default_model.py runs/default [--quality bench/results/conditional.md ...]

Takes the run's exported EMA weights (<run>/model), records the exact command that reproduces
them (the run's command with --steps set to the step count they come from: the trainer's draws,
warm-ups and EMA do not depend on the total), draws a 64-image sample grid, exports model.onnx
(checked against PyTorch), adds the yardstick table to the model card, and saves it all atomically.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends import load_model  # noqa: E402
from diffusion_core.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from diffusion_core.config import ModelConfig  # noqa: E402
import numpy as np  # noqa: E402

from diffusion_core.data import viewable_grid  # noqa: E402

YARDSTICK = """## Quality

Measured by the project's yardstick (Frechet distance and KID on the features of a small
Fashion-MNIST classifier shipped in `diffusion_core/quality/`; FID's Inception network is not
available offline and is a poor judge of 28x28 garments). Each table below names the benchmark
under `bench/` that writes it.

"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run folder of backends.pytorch.train (holding model/)")
    p.add_argument("--out", default=str(ROOT / "models" / "default"))
    p.add_argument("--quality", action="append", default=[],
                   help="a Markdown table from bench/ (quality.md, conditional.md, ...); repeatable")
    args = p.parse_args()

    exported = load_checkpoint(Path(args.run) / "model")
    notes = dict(exported.config.notes)
    steps = int(notes["steps"])
    command = re.sub(r"--steps \d+", f"--steps {steps}", notes["training_command"])
    notes.update(training_command=command,
                 title="Class-conditional DDPM on Fashion-MNIST (diffusion-toolkit default model)",
                 reproduce="bash scripts/train_default_model.sh runs/default", license="mit")
    config = ModelConfig(network=exported.config.network, diffusion=exported.config.diffusion, notes=notes)

    model = load_model("pytorch", exported, device="cpu")
    names = notes.get("class_names") or []
    if names:  # a column per class (8 rows of the 10 classes would not tile: 10 x 6 images)
        images = model.sample(batch_size=60, sampler="dpmpp_2m", steps=20, seed=0,
                              class_labels=np.arange(60) % len(names), guidance_scale=3.0)
        grid = viewable_grid(images, columns=len(names))
        shown = (f"60 images, a column per class ({', '.join(names)}), classifier-free guidance 3, "
                 "DPM-Solver++(2M), 20 steps, seed 0")
    else:
        grid = viewable_grid(model.sample(batch_size=64, sampler="dpmpp_2m", steps=20, seed=0))
        shown = "64 images, DPM-Solver++(2M), 20 steps, seed 0"
    extra = ["## Reproduce", "", "```bash", notes["reproduce"],
             "python scripts/publish_default_model.py runs/default", "```", "", f"Samples above: {shown}."]
    if args.quality:
        extra += ["", YARDSTICK + "\n\n".join(Path(q).read_text() for q in args.quality)]

    from backends.onnx.export import export_graph
    graph = export_graph(config, exported.weights)     # checked against PyTorch before use
    out = save_checkpoint(args.out, config, exported.weights, onnx_bytes=graph.data, sample_grid=grid,
                          card_extra="\n".join(extra))
    print(f"wrote {out} (step {steps}; model.onnx opset {graph.opset}, "
          f"max |ORT - PyTorch| = {graph.max_abs_diff:.2g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
