"""Command line: bring a foreign checkpoint in, or take one out to diffusers.

    python -m diffusion_core.convert import google/ddpm-cifar10-32 models/cifar10
    python -m diffusion_core.convert import results/model-10.pt models/mine --image-size 32
    python -m diffusion_core.convert import model-10.ckpt models/ms --image-size 32 --schedule cosine
    python -m diffusion_core.convert export --to diffusers models/cifar10 exported/cifar10

`import` writes a toolkit checkpoint folder (config.json, model.safetensors, README.md); add
model.onnx with `python -m backends.onnx.export OUT`. Errors are one line on stderr, exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m diffusion_core.convert",
                                     description="Import diffusers, denoising-diffusion-pytorch and "
                                                 "denoising-diffusion-mindspore checkpoints, or export to diffusers.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{import,export}")
    imp = commands.add_parser("import", help="write a foreign checkpoint as a toolkit checkpoint folder",
                              description="SOURCE is a diffusers folder (bare, unet/ + scheduler/, or a "
                                          "pipeline), a Hub repo id holding one, a denoising-diffusion-pytorch "
                                          "milestone (.pt) or a denoising-diffusion-mindspore checkpoint (.ckpt).")
    imp.add_argument("source")
    imp.add_argument("out", help="folder to write the checkpoint to (replaced as a whole)")
    imp.add_argument("--from", dest="kind", default="auto",
                     choices=["auto", "diffusers", "lucidrains", "mindspore-port"],
                     help="the source's format (default: from what SOURCE is)")
    imp.add_argument("--image-size", type=int, help="training image size (lucidrains and MindSpore-port "
                                                    "checkpoints do not record it)")
    imp.add_argument("--weights", choices=["ema", "model"], default="ema",
                     help="lucidrains milestones: the EMA weights (default) or the raw ones")
    imp.add_argument("--prediction-type", choices=["eps", "x0", "v"],
                     help="the objective (pred_noise, pred_x0, pred_v), when the file does not tell it")
    imp.add_argument("--schedule", choices=["linear", "cosine", "sigmoid"],
                     help="MindSpore-port checkpoints: the beta schedule (default cosine, the port's)")
    imp.add_argument("--timesteps", type=int, help="MindSpore-port checkpoints: T (default 1000)")
    imp.add_argument("--attn-heads", type=int, help="MindSpore-port checkpoints: attention heads (default 4)")
    imp.add_argument("--groups", type=int, default=8, help="MindSpore-port checkpoints: GroupNorm groups (default 8)")
    imp.add_argument("--revision", help="Hub sources: branch, tag or commit (default main)")
    imp.add_argument("--endpoint", help="Hub sources: the Hub URL (default HF_ENDPOINT or huggingface.co)")
    imp.add_argument("--cache-dir", help="Hub sources: cache folder (default HF_HUB_CACHE or ~/.cache/huggingface/hub)")
    exp = commands.add_parser("export", help="write a checkpoint in another library's layout")
    exp.add_argument("--to", choices=["diffusers"], required=True)
    exp.add_argument("checkpoint", help="a checkpoint folder (toolkit or diffusers layout)")
    exp.add_argument("out", help="folder to write the DDPMPipeline to")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    from ..checkpoint import CheckpointError
    from ..hub import HubError
    from . import export_checkpoint, import_checkpoint
    try:
        if args.command == "import":
            out = import_checkpoint(args.source, args.out, kind=args.kind, image_size=args.image_size,
                                    weights=args.weights, prediction_type=args.prediction_type,
                                    schedule=args.schedule, num_train_timesteps=args.timesteps,
                                    attn_heads=args.attn_heads, resnet_block_groups=args.groups,
                                    revision=args.revision, endpoint=args.endpoint, cache_dir=args.cache_dir)
            print(f"wrote {out}; add model.onnx with `python -m backends.onnx.export {out}`")
        else:
            out = export_checkpoint(args.checkpoint, args.out, to=args.to)
            print(f"wrote {out}: open it with diffusers.DDPMPipeline.from_pretrained({str(out)!r})")
    except (ValueError, CheckpointError, HubError) as error:   # ConfigError and LayoutError are ValueErrors
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
