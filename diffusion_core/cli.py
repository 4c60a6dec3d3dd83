"""The console command: `diffusion-toolkit <subcommand> ...`, one entry for everything a user runs.

    train     train a model (--framework pytorch | mindspore; every trainer flag after it)
    sample    draw images from a checkpoint folder or a Hub repo into PNG files
    convert   import foreign checkpoints (diffusers, lucidrains, the MindSpore port) or export them
    export    add model.onnx to a checkpoint (--framework pytorch | mindspore)
    push      upload a checkpoint folder to the Hub
    pull      download a checkpoint from the Hub
    app       serve the web app
    quality   FD / KID (and per-class accuracy) of a model by the yardstick
    fit-timesteps  fit a sampler's timesteps on a model and store them with it

Each subcommand has its own --help naming every flag and its default. Frameworks are imported only
by the subcommand that needs them, so `diffusion-toolkit --help` needs NumPy alone.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

# subcommand -> (module whose main(argv) runs it, one line for the overview)
DELEGATED = {
    "convert": ("diffusion_core.convert.__main__", "import foreign checkpoints or export to diffusers"),
    "push": ("diffusion_core.hub", "upload a checkpoint folder to the Hugging Face Hub"),
    "pull": ("diffusion_core.hub", "download a checkpoint from the Hugging Face Hub"),
    "app": ("webapp.page", "serve the web app (generate, image-to-image, compare, Hub)"),
    "fit-timesteps": ("diffusion_core.fit_timesteps", "fit a sampler's timesteps on a model"),
}
TRAINERS = {"pytorch": "backends.pytorch.train", "mindspore": "backends.mindspore.train"}
EXPORTERS = {"pytorch": "backends.onnx.export", "mindspore": "backends.mindspore.export"}


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _framework_first(argv: list[str], choices: dict, what: str) -> tuple[str, list[str]]:
    """(--framework value, the other arguments) without parsing what belongs to the target."""
    rest, framework = list(argv), "pytorch"
    for i, arg in enumerate(rest):
        if arg == "--framework" and i + 1 < len(rest):
            framework = rest[i + 1]
            del rest[i:i + 2]
            break
        if arg.startswith("--framework="):
            framework = arg.split("=", 1)[1]
            del rest[i]
            break
    if framework not in choices:
        raise SystemExit(f"error: --framework must be one of {', '.join(choices)} for {what}, got {framework!r}")
    return framework, rest


def _run_module(module: str, argv: list[str], prefix: Sequence[str] = ()) -> int:
    target = importlib.import_module(module)
    result = target.main(list(prefix) + argv)
    return int(result or 0)


def sample_parser() -> argparse.ArgumentParser:
    from . import SAMPLERS
    p = argparse.ArgumentParser(prog="diffusion-toolkit sample", formatter_class=_Formatter,
                                description="Draw images from a checkpoint (a folder, or a Hub repo id) "
                                            "and write them as PNG files: one grid, or one file per image.")
    p.add_argument("model", help="checkpoint folder, or a Hub repo id like owner/name")
    p.add_argument("--backend", default="pytorch", help="pytorch, mindspore, onnxruntime, or a plugin's")
    p.add_argument("--sampler", default="dpmpp_2m", choices=list(SAMPLERS), help="the sampling algorithm")
    p.add_argument("--steps", type=int, default=20, help="sampler steps")
    p.add_argument("--count", type=int, default=16, help="number of images")
    p.add_argument("--seed", type=int, default=0, help="seeds the starting noise and every later draw")
    p.add_argument("--class-label", type=int, default=None,
                   help="a class-conditional model's class (default: unconditional)")
    p.add_argument("--guidance-scale", type=float, default=1.0, help="classifier-free guidance (with --class-label)")
    p.add_argument("--out", default="samples.png", help="a .png file for a grid, or a folder for one file per image")
    p.add_argument("--revision", default=None, help="with a Hub repo id: branch, tag or commit")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="fp32: exact, the same images on every backend; bf16: PyTorch autocast, faster on CPUs "
                        "with bf16 instructions (bench/bf16.py measures speed and cost)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def sample_main(argv: list[str]) -> int:
    from pathlib import Path

    args = sample_parser().parse_args(argv)
    from .paths import toolkit_backends
    DiffusionPipeline = toolkit_backends().DiffusionPipeline
    try:
        pipe = DiffusionPipeline.from_pretrained(args.model, backend=args.backend, revision=args.revision,
                                                 precision=args.precision)
        images = pipe(args.count, sampler=args.sampler, steps=args.steps, seed=args.seed,
                      class_labels=args.class_label, guidance_scale=args.guidance_scale,
                      progress=not args.quiet)
    except (ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.suffix.lower() == ".png":
        paths = [pipe.save_grid(images, out)]
    else:
        paths = pipe.save_images(images, out)
    print(f"wrote {len(images)} image(s) to {out}" if len(paths) > 1 else f"wrote {paths[0]}")
    return 0


def quality_parser() -> argparse.ArgumentParser:
    from . import SAMPLERS
    p = argparse.ArgumentParser(prog="diffusion-toolkit quality", formatter_class=_Formatter,
                                description="Frechet distance and KID of a model's samples against the "
                                            "Fashion-MNIST test set, on the features of the shipped "
                                            "classifier; for a class-conditional model with --guidance-scale, "
                                            "also the classifier's accuracy on each requested class.")
    p.add_argument("model", nargs="?", default=None, help="checkpoint folder (default: the shipped model)")
    p.add_argument("--backend", default="onnxruntime", help="the backend that samples")
    p.add_argument("--sampler", default="dpmpp_2m", choices=list(SAMPLERS), help="the sampling algorithm")
    p.add_argument("--steps", type=int, default=20, help="sampler steps")
    p.add_argument("--samples", type=int, default=500, help="images drawn")
    p.add_argument("--batch", type=int, default=50, help="images per sampling call")
    p.add_argument("--seed", type=int, default=0, help="seed of the first batch (batch b uses seed + b)")
    p.add_argument("--guidance-scale", type=float, default=None,
                   help="class-conditional models: sample every class in turn with this guidance "
                        "(default: unconditional samples)")
    return p


def quality_main(argv: list[str]) -> int:
    import numpy as np

    from .data import DataError, load_fashion_mnist
    from .paths import default_model_dir
    from .quality import load_classifier
    from .quality.evaluate import class_accuracy, generate, measure
    args = quality_parser().parse_args(argv)
    from .paths import toolkit_backends
    load_model = toolkit_backends().load_model
    try:
        model = load_model(args.backend, args.model or default_model_dir())
        test = load_fashion_mnist("test")
    except (ValueError, RuntimeError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    classifier = load_classifier()
    labels = options = None
    if args.guidance_scale is not None:
        labels = np.arange(args.samples) % len(test.class_names)
        options = {"guidance_scale": args.guidance_scale}
    images = generate(model, args.sampler, args.steps, args.samples, args.batch, args.seed,
                      class_labels=labels, **(options or {}))
    result = measure(classifier, images, classifier.features(test.images))
    print(f"{args.sampler}, {args.steps} steps, {args.samples} samples on {args.backend}: "
          f"FD {result['fd']:.2f}, KID {result['kid']:.4f} (+- {result['kid_std']:.4f})")
    if labels is not None:
        accuracy = class_accuracy(classifier, images, labels)
        print(f"guidance {args.guidance_scale:g}: accuracy on the requested class {np.nanmean(accuracy):.1%} "
              "(" + ", ".join(f"{n} {a:.0%}" for n, a in zip(test.class_names, accuracy)) + ")")
    return 0


def overview() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffusion-toolkit", formatter_class=_Formatter, description=__doc__,
                                epilog="`diffusion-toolkit <subcommand> --help` explains that subcommand's flags.")
    p.add_argument("subcommand", choices=["train", "sample", "convert", "export", "push", "pull", "app", "quality",
                                                "fit-timesteps"])
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .allocator import tune_allocator
    tune_allocator()  # for every subcommand run in this process (diffusion_core/allocator.py)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        overview().print_help()
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        framework, rest = _framework_first(rest, TRAINERS, "train")
        return _run_module(TRAINERS[framework], rest)
    if command == "export":
        framework, rest = _framework_first(rest, EXPORTERS, "export")
        return _run_module(EXPORTERS[framework], rest)
    if command in ("push", "pull"):
        return _run_module(DELEGATED[command][0], rest, prefix=[command])
    if command in DELEGATED:
        return _run_module(DELEGATED[command][0], rest)
    if command == "sample":
        return sample_main(rest)
    if command == "quality":
        return quality_main(rest)
    overview().error(f"unknown subcommand {command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
