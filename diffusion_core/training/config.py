"""One training configuration and one command line for every framework's trainer.

`python -m backends.pytorch.train ...` and `python -m backends.mindspore.train ...` take the same
flags because both build them here; the result is a frozen `TrainConfig` saved with every run.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..architectures import UnetConfig
from ..config import DiffusionConfig, ModelConfig
from ..parsing import ConfigError, parse_dataclass
from ..prediction import PREDICTION_TYPES
from ..schedules import SCHEDULES
from .objective import LOSS_WEIGHTINGS, LossConfig

LR_DECAYS = ("none", "linear", "cosine")  # the learning rate after warm-up (rules.learning_rate_at)


@dataclass(frozen=True)
class TrainConfig:
    """What a run does; the model's own shape lives in `model` (config.json of the export)."""

    data: str = "digits"               # fashion-mnist | digits | a folder of images
    out: str = "runs/default"          # run folder: checkpoints, sample grids, exported model
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    steps: int = 10_000                # optimizer steps
    batch_size: int = 64               # per process, per micro-batch
    grad_accum: int = 1                # micro-batches per optimizer step
    lr: float = 2e-4                   # AdamW
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 0              # linear learning-rate warm-up
    lr_decay: str = "none"             # after warm-up: none (constant) | linear | cosine, to 0
    lr_decay_steps: int = 0            # ... over this many steps (counted from the end of warm-up)
    grad_clip: float = 1.0             # max global grad norm (0: off)
    ema_decay: float = 0.999           # EMA of the weights (Polyak averaging)
    ema_warmup: int = 100              # decay ramps as min(decay, (1 + n) / (10 + n)) before that
    cond_drop_prob: float = 0.1        # class-conditional: labels dropped to the null class (Ho & Salimans)
    bf16: bool = False                 # bf16 autocast (GPU, or a CPU with bf16 instructions)
    seed: int = 0
    sample_every: int = 1000           # write a sample grid (EMA weights) every N steps (0: never)
    sample_steps: int = 50             # sampler steps for those grids
    sample_sampler: str = "ddim"
    checkpoint_every: int = 1000       # atomic training checkpoint every N steps (and at the end)
    log_every: int = 50
    device: str = "auto"               # auto | cpu | cuda | cuda:N (PyTorch); cpu | gpu (MindSpore)
    num_threads: int = 0               # CPU threads for the framework (0: its default)
    image_size: Optional[int] = None   # resize a folder's images to this size (None: keep)
    init_from: Optional[str] = None    # start from this checkpoint's weights (fine-tuning), not at random

    def __post_init__(self) -> None:
        positive = {"steps": self.steps, "batch_size": self.batch_size, "grad_accum": self.grad_accum,
                    "sample_steps": self.sample_steps, "log_every": self.log_every}
        bad = [f"{k}={v}" for k, v in positive.items() if not (isinstance(v, int) and v > 0)]
        if bad:
            raise ConfigError(f"{', '.join(bad)}: these must be positive integers")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if not 0.0 <= self.cond_drop_prob < 1.0:
            raise ConfigError(f"cond_drop_prob must be in [0, 1), got {self.cond_drop_prob}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.lr_decay not in LR_DECAYS:
            raise ConfigError(f"lr_decay must be one of {', '.join(LR_DECAYS)}, got {self.lr_decay!r}")
        if self.lr_decay != "none" and not (isinstance(self.lr_decay_steps, int) and self.lr_decay_steps > 0):
            raise ConfigError(f"--lr-decay {self.lr_decay} needs --lr-decay-steps > 0 (the steps over "
                              f"which the learning rate falls to 0), got {self.lr_decay_steps}")
        if self.grad_clip < 0 or self.sample_every < 0 or self.checkpoint_every < 0 or self.warmup_steps < 0:
            raise ConfigError("grad_clip, sample_every, checkpoint_every and warmup_steps must be >= 0")

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["model"] = self.model.to_dict()
        return json.dumps(data, indent=2, sort_keys=True, default=list) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        data = json.loads(text)
        model = ModelConfig.from_dict(data.pop("model"))
        loss = parse_dataclass(LossConfig, data.pop("loss"), "loss")
        return parse_dataclass(cls, data, "train config").replace(model=model, loss=loss)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2,2, got {text!r}")


def _bools(text: str) -> tuple[bool, ...]:
    values = {"1": True, "0": False, "true": True, "false": False}
    try:
        return tuple(values[v.strip().lower()] for v in text.split(","))
    except KeyError:
        raise argparse.ArgumentTypeError(f"expected comma-separated 0/1 like 0,0,1, got {text!r}")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the description's line breaks (examples) and still show every default."""


def _bf16_here() -> str:
    """One sentence on this machine's CPU for the --bf16 help."""
    from ..cpu import bf16_instructions, cpu_flags
    has = bf16_instructions()
    if has is None:
        return "This machine's CPU flags cannot be read."
    return (f"This CPU has bf16 instructions ({cpu_flags()})." if has else
            f"This CPU ({cpu_flags()}) has no bf16 instructions: train in fp32 here.")


def build_parser(prog: str, description: str, help_overrides: Optional[dict[str, str]] = None
                 ) -> argparse.ArgumentParser:
    """The shared command line; every default comes from the dataclasses above. A trainer says
    what a flag means for its framework (e.g. --device) through help_overrides."""
    d, u, f, loss = TrainConfig(), UnetConfig(), DiffusionConfig(), LossConfig()
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=_HelpFormatter)
    g = p.add_argument_group("data and run")
    g.add_argument("--data", default=d.data, help="'fashion-mnist' (Debian package dataset-fashion-mnist), "
                   "'digits' (scikit-learn's 8x8 digits, upscaled), or a folder of images")
    g.add_argument("--image-size", type=int, default=None, help="digits: 8, 16 (default), 24 or 32 "
                   "(whole-pixel upscaling); fashion-mnist: 28 unless given; a folder: the first "
                   "image's size unless given")
    g.add_argument("--out", default=d.out, help="run folder: training checkpoint, sample grids, and "
                   "the exported model in <out>/model (config.json + model.safetensors)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out exactly where "
                   "its last checkpoint left off (same flags required)")
    g.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                   help="start from the weights of this checkpoint folder (its network config must match "
                        "the flags, or be the same network without classes: the null class then "
                        "starts as that model) instead of a random initialisation: fine-tuning")
    g.add_argument("--seed", type=int, default=d.seed,
                   help="seeds the initial weights and every NumPy generator (data order, draws)")
    g.add_argument("--device", default=d.device)
    g.add_argument("--num-threads", type=int, default=d.num_threads)
    g = p.add_argument_group("model")
    g.add_argument("--dim", type=int, default=u.dim, help="channel width of the first Unet level")
    g.add_argument("--dim-mults", type=_ints, default=u.dim_mults, help="width multiplier per level")
    g.add_argument("--full-attn", type=_bools, default=None,
                   help="full attention per level as 0/1 (default: only the last level)")
    g.add_argument("--no-linear-attn", action="store_true", help="no attention at the other levels")
    g.add_argument("--attn-heads", type=int, default=u.attn_heads)
    g.add_argument("--attn-dim-head", type=int, default=u.attn_dim_head)
    g.add_argument("--groups", type=int, default=u.resnet_block_groups, help="GroupNorm groups")
    g.add_argument("--dropout", type=float, default=u.dropout)
    g.add_argument("--self-condition", action="store_true")
    g.add_argument("--class-conditional", action="store_true",
                   help="condition on the dataset's labels (a class embedding, Ho & Salimans 2022): "
                        "fashion-mnist, digits, or a folder with one sub-folder per class")
    g.add_argument("--cond-drop-prob", type=float, default=d.cond_drop_prob,
                   help="with --class-conditional: the probability that a label is replaced by the "
                        "null class during training, so the model also learns the unconditional "
                        "score that classifier-free guidance needs")
    g = p.add_argument_group("diffusion")
    g.add_argument("--timesteps", type=int, default=f.num_train_timesteps, help="T")
    g.add_argument("--schedule", default=f.schedule, choices=list(SCHEDULES))
    g.add_argument("--zero-terminal-snr", action="store_true")
    g.add_argument("--prediction", default=f.prediction_type, choices=list(PREDICTION_TYPES))
    g.add_argument("--loss-weighting", default=loss.weighting, choices=list(LOSS_WEIGHTINGS))
    g.add_argument("--min-snr-gamma", type=float, default=loss.min_snr_gamma)
    g.add_argument("--p2-gamma", type=float, default=loss.p2_gamma)
    g.add_argument("--p2-k", type=float, default=loss.p2_k)
    g.add_argument("--offset-noise", type=float, default=loss.offset_noise)
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=d.steps)
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--grad-accum", type=int, default=d.grad_accum)
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    g.add_argument("--lr-decay", default=d.lr_decay, choices=list(LR_DECAYS),
                   help="after the warm-up, let the learning rate fall to 0 over --lr-decay-steps "
                        "(linear, or half a cosine); none keeps it constant")
    g.add_argument("--lr-decay-steps", type=int, default=d.lr_decay_steps)
    g.add_argument("--grad-clip", type=float, default=d.grad_clip)
    g.add_argument("--ema-decay", type=float, default=d.ema_decay)
    g.add_argument("--ema-warmup", type=int, default=d.ema_warmup)
    g.add_argument("--bf16", action="store_true",
                   help="bf16 autocast (GPU, or a CPU with bf16 instructions: 1.8-2.1x faster steps "
                        "than fp32 on an AMD EPYC with AVX-512 bf16, no AMX, 1 thread; on an AVX2-only "
                        "EPYC it is emulated and a step took 13 s against 1.7 s in fp32; "
                        "bench/train_throughput.py --bf16). " + _bf16_here())
    g = p.add_argument_group("monitoring")
    g.add_argument("--sample-every", type=int, default=d.sample_every)
    g.add_argument("--sample-steps", type=int, default=d.sample_steps)
    g.add_argument("--sample-sampler", default=d.sample_sampler)
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    g.add_argument("--log-every", type=int, default=d.log_every)
    for flag, text in (help_overrides or {}).items():
        action = next((a for a in p._actions if flag in a.option_strings), None)
        if action is None:
            raise ValueError(f"help_overrides names {flag!r}, which is not a flag of the shared parser")
        action.help = text
    return p


def from_args(args: argparse.Namespace, *, image_size: int, channels: int, num_classes: int = 0) -> TrainConfig:
    """TrainConfig from parsed flags; image_size/channels (and, with --class-conditional, the
    number of classes) come from the data actually loaded."""
    levels = len(args.dim_mults)
    full_attn = args.full_attn if args.full_attn is not None else (False,) * (levels - 1) + (True,)
    unet = UnetConfig(image_size=image_size, channels=channels, dim=args.dim, dim_mults=args.dim_mults,
                      full_attn=full_attn, linear_attn=not args.no_linear_attn, attn_heads=args.attn_heads,
                      attn_dim_head=args.attn_dim_head, resnet_block_groups=args.groups,
                      dropout=args.dropout, self_condition=args.self_condition,
                      num_classes=num_classes if args.class_conditional else 0)
    diffusion = DiffusionConfig(num_train_timesteps=args.timesteps, schedule=args.schedule,
                                zero_terminal_snr=args.zero_terminal_snr, prediction_type=args.prediction)
    loss = LossConfig(weighting=args.loss_weighting, p2_gamma=args.p2_gamma, p2_k=args.p2_k,
                      min_snr_gamma=args.min_snr_gamma, offset_noise=args.offset_noise)
    return TrainConfig(data=args.data, out=args.out, model=ModelConfig(network=unet, diffusion=diffusion),
                       loss=loss, steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
                       lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
                       lr_decay=args.lr_decay, lr_decay_steps=args.lr_decay_steps,
                       grad_clip=args.grad_clip, ema_decay=args.ema_decay, ema_warmup=args.ema_warmup,
                       cond_drop_prob=args.cond_drop_prob,
                       bf16=args.bf16, seed=args.seed, sample_every=args.sample_every,
                       sample_steps=args.sample_steps, sample_sampler=args.sample_sampler,
                       checkpoint_every=args.checkpoint_every, log_every=args.log_every,
                       device=args.device, num_threads=args.num_threads, image_size=args.image_size,
                       init_from=args.init_from)


def checked_config(args: argparse.Namespace, *, image_size: int, channels: int,
                   num_classes: int = 0) -> TrainConfig:
    """from_args, plus the checks every trainer makes before it starts; ConfigError says what to fix."""
    from ..samplers import get_sampler
    if args.class_conditional and num_classes < 2:
        raise ConfigError(f"--class-conditional needs labelled data with at least two classes; "
                          f"--data {args.data} has none: use fashion-mnist, digits, or a folder "
                          "with one sub-folder of images per class")
    try:
        config = from_args(args, image_size=image_size, channels=channels, num_classes=num_classes)
        get_sampler(config.sample_sampler)
    except ValueError as e:  # LossConfig and the sampler registry raise plain ValueErrors
        raise ConfigError(str(e)) from None
    diffusion = config.model.diffusion
    if diffusion.zero_terminal_snr and diffusion.prediction_type == "eps":
        raise ConfigError("--zero-terminal-snr makes x0 unrecoverable from an eps prediction at t = T-1 "
                          "(Lin et al. 2023); add --prediction v")
    end = config.warmup_steps + config.lr_decay_steps
    if config.lr_decay != "none" and config.steps > end:
        raise ConfigError(f"--steps {config.steps} runs past the end of the learning-rate decay (step "
                          f"{end} = --warmup-steps + --lr-decay-steps), where the rate is 0; lengthen "
                          f"--lr-decay-steps to {config.steps - config.warmup_steps} or shorten --steps")
    if config.init_from:
        initial_weights(config)  # refused now, before any framework starts, if it does not fit
    return config


def initial_weights(config: TrainConfig) -> dict:
    """The canonical weights --init-from names, checked against the run's network config."""
    from ..checkpoint import CheckpointError, load_checkpoint
    try:
        source = load_checkpoint(config.init_from)
    except CheckpointError as e:
        raise ConfigError(f"--init-from: {e}") from None
    ours = config.model.network
    if source.config.network == ours:
        return source.weights
    if _adds_classes(source.config.network, ours):
        return _with_new_class_table(source.weights, config)
    theirs = source.config.architecture.summary(source.config.network)
    raise ConfigError(f"--init-from {config.init_from}: its network ({theirs}) differs from the flags' "
                      f"({config.model.architecture.summary(ours)}); use the flags it was trained with")


def _adds_classes(theirs, ours) -> bool:
    """True when `ours` is `theirs` plus a class embedding: an unconditional network made conditional."""
    # dataclass equality compares the classes too; the getattr guards architectures without classes
    return (getattr(theirs, "num_classes", None) == 0 and getattr(ours, "num_classes", 0) > 0
            and dataclasses.replace(ours, num_classes=0) == theirs)


def _with_new_class_table(weights: dict, config: TrainConfig) -> dict:
    """The unconditional weights plus a class table whose null row (the last) is zero and whose class
    rows are N(0, 1), nn.Embedding's start, drawn from NumPy with the run's seed so that both
    trainers begin alike. The table is added to the time embedding, so the null class is exactly the
    unconditional model at step 0. The class rows must not start at zero: Adam moves a row about lr
    per step, and a zero table measured 0.004 per entry after 1,000 steps at 3e-4 (guided samples at
    chance), against the O(1) the time embedding works at."""
    shapes = config.model.architecture.parameter_shapes(config.model.network)
    rng = np.random.default_rng(config.seed)
    out = dict(weights)
    for name, shape in shapes.items():
        if name not in weights:  # the class table, (num_classes + 1, time_dim)
            table = rng.standard_normal(shape).astype(np.float32)
            table[-1] = 0.0
            out[name] = table
    return out


def load_run_config(out: str | Path) -> TrainConfig:
    return TrainConfig.from_json((Path(out) / "train_config.json").read_text())
