"""Train a diffusion Unet with MindSpore: the PyTorch trainer's recipe and command line.

examples:
  python -m backends.mindspore.train --data digits --steps 2000 --out runs/digits-ms
  python -m backends.mindspore.train --data fashion-mnist --steps 20000 --batch-size 128 --out runs/f
  python -m backends.mindspore.train <the same flags> --resume     # continue exactly

The flags are the PyTorch trainer's (diffusion_core/train_config.py builds both). The run folder
--out receives train_config.json, train_log.jsonl, samples/ (a grid from the EMA weights every
--sample-every steps, always from the same noise), the training checkpoint
training_state.safetensors, and model/: the canonical checkpoint (config.json, model.safetensors
of the EMA weights, README.md, samples.png) that every backend loads, PyTorch included.

Every random number of a step comes from NumPy generators seeded like the PyTorch trainer's (data
order, timesteps, noise, the self-conditioning coin), through diffusion_core.training.draw; that
makes --resume exact. The step itself runs as compiled MindSpore graphs (train_step.py).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from diffusion_core import run_state, training
from diffusion_core.checkpoint import CheckpointError, save_checkpoint
from diffusion_core.config import ConfigError, ModelConfig
from diffusion_core.data import DataError, Dataset, EpochSampler, load_dataset, make_grid, save_png
from diffusion_core.samplers import sample
from diffusion_core.train_config import TrainConfig, build_parser, checked_config


GRID_SEED = 1234          # the same starting noise for every grid, so grids compare across steps
GRID_COUNT = 16
LOG_FILE = "train_log.jsonl"
STATE_FORMAT = "diffusion-toolkit-mindspore-training-state/1"


class TrainingDiverged(RuntimeError):
    pass


def build_arg_parser() -> argparse.ArgumentParser:
    return build_parser("python -m backends.mindspore.train", __doc__, help_overrides={
        "--device": "auto (MindSpore's default device), cpu, gpu or ascend",
        "--num-threads": "CPU threads for MindSpore's kernels (0: its default)",
        "--bf16": "bfloat16 mixed precision (GPU/Ascend; MindSpore has no bfloat16 CPU kernels)"})


class Trainer:
    """One run: Unet, AdamW, EMA, generators; `run()` trains up to config.steps.

    precision: float32, bfloat16 (what --bf16 asks for) or float16 (dynamic loss scaling; Python
    API only, since the shared command line has no float16 flag).
    """

    def __init__(self, config: TrainConfig, dataset: Dataset, command: str = "",
                 precision: Optional[str] = None):
        import mindspore as ms

        from .model import build_unet
        from .train_step import TrainStep
        self.config, self.dataset, self.command = config, dataset, command
        self.out = Path(config.out)
        self.schedule = config.model.diffusion.make_schedule()
        self.prediction_type = config.model.diffusion.prediction_type
        self.unet = build_unet(config.model.unet, seed=config.seed)
        self.precision = precision or ("bfloat16" if config.bf16 else "float32")
        self.step_fn = TrainStep(self.unet, config, self.precision)
        self.sampler = EpochSampler(len(dataset), config.batch_size,
                                    np.random.default_rng([config.seed, 0]))
        self.draw_rng = np.random.default_rng([config.seed, 1, 0])  # the PyTorch trainer's rank 0
        self.step = 0
        self.last_loss: Optional[float] = None
        self.last_grid: Optional[np.ndarray] = None
        self._sampling_model = None
        self.framework = f"mindspore {ms.__version__}"

    def micro_batches(self):
        cfg = self.config
        shape = (cfg.batch_size,) + self.dataset.images.shape[1:]
        for _ in range(cfg.grad_accum):
            index = self.sampler.next()
            d = training.draw(self.schedule, self.draw_rng, shape, self.prediction_type, cfg.loss)
            self_cond = cfg.model.unet.self_condition and self.draw_rng.random() < 0.5
            yield self.dataset.images[index], d, self_cond

    def train_step(self) -> float:
        loss, applied = self.step_fn.step(self.micro_batches(), self.step)
        self.step += 1
        return loss if applied else float("nan")

    def run(self) -> None:
        from tqdm import tqdm
        cfg = self.config
        bar = tqdm(total=cfg.steps, initial=self.step, unit="step", dynamic_ncols=True,
                   file=sys.stderr)
        losses, window_steps, window_start = [], 0, time.perf_counter()
        while self.step < cfg.steps:
            loss = self.train_step()
            window_steps += 1
            if np.isfinite(loss):  # float16: a skipped (overflowed) step has no loss
                losses.append(loss)
            elif self.precision != "float16":
                raise TrainingDiverged(f"the loss became {loss} at step {self.step}; lower --lr or "
                                       "keep --grad-clip on")
            bar.update(1)
            final = self.step == cfg.steps
            if self.step % cfg.log_every == 0 or final:
                rate = (cfg.batch_size * cfg.grad_accum * window_steps
                        / (time.perf_counter() - window_start))
                self.last_loss = float(np.mean(losses)) if losses else self.last_loss
                bar.set_postfix(loss=f"{self.last_loss:.4f}", img_s=f"{rate:.0f}")
                self._log({"step": self.step, "loss": self.last_loss, "images_per_s": rate,
                           "skipped_steps": window_steps - len(losses)})
                losses, window_steps, window_start = [], 0, time.perf_counter()
            if (cfg.sample_every and self.step % cfg.sample_every == 0) or final:
                self.sample_grid()
            if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or final:
                self.save()
        bar.close()

    def _log(self, row: dict) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / LOG_FILE, "a") as f:
            f.write(json.dumps(row) + "\n")

    def ema_model(self):
        """The EMA weights in an inference Unet behind the model contract (reused across grids)."""
        from .model import MindSporeDenoiserModel, build_unet, load_state_from_numpy
        if self._sampling_model is None:
            self._sampling_model = MindSporeDenoiserModel(build_unet(self.config.model.unet))
        load_state_from_numpy(self._sampling_model.unet, self.step_fn.ema_weights())
        return self._sampling_model

    def sample_grid(self) -> np.ndarray:
        """Samples from the EMA weights through the core's sampler, from fixed noise."""
        cfg, unet_cfg = self.config, self.config.model.unet
        model = self.ema_model()
        images = sample(model, self.schedule, sampler=cfg.sample_sampler, steps=cfg.sample_steps,
                        shape=(GRID_COUNT, unet_cfg.channels, unet_cfg.image_size,
                               unet_cfg.image_size),
                        seed=GRID_SEED, ops=model.ops, prediction_type=self.prediction_type,
                        self_condition=unet_cfg.self_condition)
        self.last_grid = make_grid(images)
        save_png(self.out / "samples" / f"step_{self.step:07d}.png", self.last_grid)
        return self.last_grid

    # --- checkpoints --------------------------------------------------------------------------

    def save(self) -> None:
        """The training checkpoint (atomic), then the EMA weights as the canonical model."""
        meta = {"step": self.step, "loss": self.last_loss, "framework": self.framework,
                "precision": self.precision, "train_config": json.loads(self.config.to_json()),
                "data_sampler": self.sampler.state(), "draws_rng": self.draw_rng.bit_generator.state}
        run_state.save_state(self.out, self.step_fn.state_tensors(), meta, STATE_FORMAT)
        self.export()

    def export(self) -> Path:
        cfg = self.config
        notes = {"dataset": self.dataset.name, "steps": self.step, "framework": self.framework,
                 "global_batch": cfg.batch_size * cfg.grad_accum, "training_command": self.command,
                 "final_loss": None if self.last_loss is None else round(self.last_loss, 5)}
        model_cfg = ModelConfig(unet=cfg.model.unet, diffusion=cfg.model.diffusion, notes=notes)
        return save_checkpoint(self.out / "model", model_cfg, self.step_fn.ema_weights(),
                               sample_grid=self.last_grid)

    def resume(self) -> None:
        tensors, meta = run_state.load_state(self.out, STATE_FORMAT, foreign_hint=(
            "it was written by the PyTorch trainer: resume it with python -m backends.pytorch.train, "
            "or start a MindSpore run from its exported model"))
        run_state.check_resumable(meta, self.config)
        if meta.get("precision", "float32") != self.precision:
            raise run_state.ResumeError(
                f"--resume: the checkpoint trained in {meta.get('precision')} and this run asks "
                f"for {self.precision}; use the same precision flags")
        try:
            self.step_fn.load_state_tensors(tensors)
        except KeyError as e:
            raise run_state.ResumeError(f"the training checkpoint lacks tensor {e}; restart the "
                                          "run without --resume in a new --out folder") from None
        self.sampler.load_state(meta["data_sampler"])
        self.draw_rng.bit_generator.state = meta["draws_rng"]
        self.step, self.last_loss = int(meta["step"]), meta.get("loss")
        if self.config.model.unet.dropout > 0:
            print("warning: MindSpore keeps dropout's random state inside compiled graphs where it "
                  "cannot be saved, so this resumed run draws other dropout masks than an "
                  "uninterrupted one would", file=sys.stderr)


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_arg_parser().parse_args(argv)
    try:
        from . import prepare
        prepare(None if args.device == "auto" else args.device, args.num_threads)
        dataset = load_dataset(args.data, args.image_size)
        config = checked_config(args, image_size=dataset.image_size, channels=dataset.channels)
        out = Path(config.out)
        run_state.refuse_to_overwrite(out, args.resume)
        trainer = Trainer(config, dataset, f"python -m backends.mindspore.train {shlex.join(argv)}")
        if args.resume:
            trainer.resume()
        out.mkdir(parents=True, exist_ok=True)
        run_state.write_atomically(out / run_state.RUN_CONFIG_FILE, config.to_json().encode())
        trainer.run()
        return 0
    except (ConfigError, DataError, CheckpointError, run_state.ResumeError) as e:
        print(f"error: {e}", file=sys.stderr)  # a setting or a file to fix: one line
        return 2
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
