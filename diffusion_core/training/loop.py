"""The training loop, written once for every framework (Ho et al. 2020, Algorithm 1, repeated).

    for each optimizer step:
        the loop draws      data order (EpochSampler), t, noise and coefficients (objective.draw),
                            the self-conditioning coin: every random number, from NumPy generators
        the engine steps    forward, backward, clip, AdamW, EMA (engine.py; rules.py's schedules)
        the loop logs       mean loss and images/s every log_every steps; a non-finite loss stops
        the loop samples    a grid from the EMA weights every sample_every steps, from fixed noise
        the loop saves      training_state.safetensors (atomic) and the canonical model/ export

Only rank 0 writes files. Because every draw comes from generators whose states are saved, a
resumed run continues exactly where the interrupted one would have been.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Iterator, Optional, TextIO

import numpy as np

from ..architectures.inputs import CLASS_LABEL, SELF_CONDITION, find_role
from ..checkpoint import CONFIG_FILE, load_checkpoint, save_checkpoint
from ..config import ModelConfig
from ..data import Dataset, EpochSampler, save_png, viewable_grid
from ..parsing import ConfigError
from ..samplers import sample
from . import state as run_state
from .config import TrainConfig
from .engine import MicroBatch, StepEngine
from .objective import draw
from .plot import plot_losses
from .rules import learning_rate_at

GRID_SEED = 1234          # the same starting noise for every grid, so grids compare across steps
LOG_FILE = "train_log.jsonl"
LOSS_PLOT = "loss.png"
MODEL_FOLDER = "model"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the message says what to change."""


class TrainingLoop:
    """One run: the generators, the step counter and the files; `run()` trains up to config.steps."""

    def __init__(self, config: TrainConfig, dataset: Dataset, engine: StepEngine, command: str = "",
                 progress: Optional[TextIO] = sys.stderr):
        self.config, self.dataset, self.engine = config, dataset, engine
        self.commands = [command]  # the first command line, then those of each --resume
        self.out = Path(config.out)
        self.progress = progress
        self.schedule = config.model.diffusion.make_schedule()
        self.prediction_type = config.model.diffusion.prediction_type
        self.self_condition = find_role(config.model.inputs, SELF_CONDITION) is not None
        self.class_label = find_role(config.model.inputs, CLASS_LABEL)
        if self.class_label is not None and dataset.labels is None:
            raise ConfigError("a class-conditional model needs a dataset with labels: fashion-mnist, "
                              "digits, or a folder with one sub-folder per class")
        # Data order is shared by all ranks (each slices its shard); the draws are per rank.
        self.sampler = EpochSampler(len(dataset), config.batch_size,
                                    np.random.default_rng([config.seed, 0]), engine.world_size, engine.rank)
        self.draw_rng = np.random.default_rng([config.seed, 1, engine.rank])
        self.step = 0
        self.last_loss: Optional[float] = None
        self.last_grid: Optional[np.ndarray] = None

    @property
    def is_main(self) -> bool:
        return self.engine.rank == 0

    # --- one step -----------------------------------------------------------------------------
    def micro_batches(self) -> Iterator[MicroBatch]:
        """The next grad_accum micro-batches: indices, draws, coins, in a fixed order of draws."""
        cfg = self.config
        shape = (cfg.batch_size,) + self.dataset.images.shape[1:]
        for _ in range(cfg.grad_accum):
            index = self.sampler.next()
            d = draw(self.schedule, self.draw_rng, shape, self.prediction_type, cfg.loss)
            use_self_cond = self.self_condition and self.draw_rng.random() < 0.5
            labels = None
            if self.class_label is not None:
                # Ho & Salimans 2022, Algorithm 1: drop each label to the null class with p_uncond
                labels = self.dataset.labels[index].astype(np.int64)
                dropped = self.draw_rng.random(len(index)) < cfg.cond_drop_prob
                labels[dropped] = int(self.class_label.fill)
            yield MicroBatch(index=index, draw=d, use_self_condition=use_self_cond, class_labels=labels)

    def train_step(self):
        """One optimizer step from the next draws; returns (engine loss, whether it was applied)."""
        loss, applied = self.engine.step(list(self.micro_batches()), self.step)
        self.step += 1
        return loss, applied

    # --- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        from tqdm import tqdm
        cfg, engine = self.config, self.engine
        images_per_step = cfg.batch_size * cfg.grad_accum * engine.world_size
        bar = tqdm(total=cfg.steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not self.is_main or self.progress is None, file=self.progress)
        losses, window_steps, window_start = [], 0, time.perf_counter()
        while self.step < cfg.steps:
            loss, applied = self.train_step()
            window_steps += 1
            if applied:  # a skipped float16 step (overflow) has no loss
                losses.append(loss)
            bar.update(1)
            final = self.step == cfg.steps
            if self.step % cfg.log_every == 0 or final:  # the only host syncs of the loop
                rate = images_per_step * window_steps / (time.perf_counter() - window_start)
                if losses:
                    mean = engine.mean_loss(losses)
                    if not np.isfinite(mean):
                        raise TrainingDiverged(f"the loss became {mean} by step {self.step}; lower "
                                               "--lr, keep --grad-clip on, or try without --bf16")
                    self.last_loss = mean
                bar.set_postfix(loss=f"{self.last_loss:.4f}" if self.last_loss is not None else "-",
                                img_s=f"{rate:.0f}")
                self._log({"step": self.step, "loss": self.last_loss, "images_per_s": rate,
                           "lr": learning_rate_at(self.step - 1, cfg),
                           "skipped_steps": window_steps - len(losses)})
                losses, window_steps, window_start = [], 0, time.perf_counter()
            if self.is_main and ((cfg.sample_every and self.step % cfg.sample_every == 0) or final):
                self.sample_grid()
            if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or final:
                self.save()
        bar.close()
        digest = engine.check_replicas()
        if self.is_main and digest is not None and self.progress is not None:
            print(f"all {engine.world_size} replicas hold identical weights (sha256 {digest[:16]})",
                  file=self.progress)

    def _log(self, row: dict) -> None:
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.out / LOG_FILE, "a") as f:
                f.write(json.dumps(row) + "\n")

    def sample_grid(self) -> np.ndarray:
        """Samples from the EMA weights through the core's sampler, from fixed noise."""
        cfg = self.config
        model = self.engine.ema_model()
        count = 16 if self.engine.device == "cpu" else 64
        inputs = {}
        if self.class_label is not None:  # a row per class: labels 0, 1, ... repeated
            inputs[self.class_label.name] = np.arange(count) % int(self.class_label.fill)
        images = sample(model, self.schedule, sampler=cfg.sample_sampler, steps=cfg.sample_steps,
                        shape=(count, *cfg.model.sample_shape), seed=GRID_SEED, ops=model.ops,
                        prediction_type=self.prediction_type, model_inputs=cfg.model.inputs,
                        inputs=inputs)
        self.last_grid = viewable_grid(images)
        plot_losses(self.out / LOG_FILE, self.out / LOSS_PLOT)
        save_png(self.out / "samples" / f"step_{self.step:07d}.png", self.last_grid)
        return self.last_grid

    # --- checkpoints --------------------------------------------------------------------------
    def save(self) -> None:
        """The training checkpoint (every rank's RNG states, written by rank 0), then the export."""
        ranks = self.engine.gather({"draws_rng": self.draw_rng.bit_generator.state,
                                    "arrays": self.engine.rank_state()})
        if not self.is_main:
            return
        arrays = dict(self.engine.state_arrays())
        for r, rank in enumerate(ranks):
            arrays.update({f"rng.{kind}.{r}": value for kind, value in rank["arrays"].items()})
        meta = {"step": self.step, "world_size": self.engine.world_size, "loss": self.last_loss,
                "commands": self.commands, "framework": self.engine.framework,
                "train_config": json.loads(self.config.to_json()), "data_sampler": self.sampler.state(),
                "draws_rng": [rank["draws_rng"] for rank in ranks], "engine": self.engine.state_meta()}
        run_state.save_state(self.out, arrays, meta, self.engine.state_format)
        plot_losses(self.out / LOG_FILE, self.out / LOSS_PLOT)
        self.export()

    def export(self) -> Path:
        """The EMA weights as the canonical checkpoint <out>/model, notes saying how it was made."""
        cfg = self.config
        notes = {"dataset": self.dataset.name, "steps": self.step, "framework": self.engine.framework,
                 "global_batch": cfg.batch_size * cfg.grad_accum * self.engine.world_size,
                 "training_command": self.commands[0],
                 "final_loss": None if self.last_loss is None else round(self.last_loss, 5)}
        if len(self.commands) > 1:
            notes["resumed_with"] = self.commands[1:]
        if self.class_label is not None:
            notes["class_names"] = list(self.dataset.class_names)
        model_cfg = ModelConfig(network=cfg.model.network, diffusion=cfg.model.diffusion, notes=notes)
        return save_checkpoint(self.out / MODEL_FOLDER, model_cfg, self.engine.ema_weights(),
                               sample_grid=self.last_grid)

    def resume(self) -> None:
        """Continue the run in config.out exactly; ResumeError says what does not fit."""
        engine = self.engine
        arrays, meta = run_state.load_state(self.out, engine.state_format)
        run_state.check_resumable(meta, self.config, free=engine.free_on_resume,
                                  world_size=engine.world_size)
        try:
            engine.load_state(arrays, meta.get("engine", {}))
            engine.load_rank_state({parts[1]: value for parts, value in
                                    ((key.split("."), value) for key, value in arrays.items())
                                    if len(parts) == 3 and parts[0] == "rng" and parts[2] == str(engine.rank)})
        except KeyError as e:
            raise run_state.ResumeError(f"the training checkpoint lacks tensor {e}; restart the run "
                                        "without --resume in a new --out folder") from None
        self.sampler.load_state(meta["data_sampler"])
        self.draw_rng.bit_generator.state = meta["draws_rng"][engine.rank]
        self.step, self.last_loss = int(meta["step"]), meta.get("loss")
        self.commands = list(meta.get("commands", [])) + self.commands

    def export_is_current(self) -> bool:
        """Whether <out>/model holds a loadable export of the step the training state is at."""
        folder = self.out / MODEL_FOLDER
        if not (folder / CONFIG_FILE).is_file():
            return False
        try:
            return load_checkpoint(folder).config.notes.get("steps") == self.step
        except ValueError:  # CheckpointError: half-written, corrupt or foreign
            return False
