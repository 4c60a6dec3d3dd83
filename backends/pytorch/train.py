"""Train a diffusion Unet with PyTorch, in one process or data-parallel under torchrun.

examples:
  python -m backends.pytorch.train --data digits --steps 2000 --out runs/digits
  python -m backends.pytorch.train --data fashion-mnist --steps 20000 --batch-size 128 --out runs/fashion
  torchrun --nproc_per_node 2 --standalone -m backends.pytorch.train --data fashion-mnist ...
  python -m backends.pytorch.train <the same flags> --resume     # continue exactly

--device auto trains on the GPU when PyTorch sees one. The run folder --out receives
train_config.json, train_log.jsonl (loss, images/s), samples/ (a grid from the EMA weights every
--sample-every steps, always from the same noise), the training checkpoint
training_state.safetensors, and model/: the canonical checkpoint (config.json, model.safetensors
of the EMA weights, README.md, samples.png) that every backend loads.

Speed: on a GPU the default Unet is bound by Python launching ~1,000 small kernels per step, not by
the GPU (H200, torch 2.11: 43-66 ms/step at batch 128, 50 ms at 256, 68 ms at 512), so a larger
--batch-size is nearly free. --bf16 adds cast kernels and did not help this model there. On a CPU
use --num-threads 1 when other work shares the cores, and no --bf16 without AMX (~30x slower here).

A step (Ho et al. 2020, Alg. 1) takes every random number from NumPy generators through
diffusion_core.training.draw: data order, timesteps, noise, offset noise and the
self-conditioning coin. That is what makes --resume exact and keeps the backends on one recipe.
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from diffusion_core import run_state, training
from diffusion_core.checkpoint import CheckpointError, save_checkpoint
from diffusion_core.config import ConfigError
from diffusion_core.data import DataError, Dataset, EpochSampler, load_dataset, make_grid, save_png
from diffusion_core.samplers import sample
from diffusion_core.train_config import TrainConfig, build_parser, checked_config

from . import distributed, trainer_state
from .ema import EMA
from .model import TorchDenoiserModel, build_unet, state_to_numpy
from .ops import TorchOps

GRID_SEED = 1234          # the same starting noise for every grid, so grids compare across steps
LOG_FILE = "train_log.jsonl"


class TrainingDiverged(RuntimeError):
    pass


def build_arg_parser():
    parser = build_parser("python -m backends.pytorch.train", __doc__, help_overrides={
        "--device": "auto (cuda if PyTorch sees a GPU, else cpu), cpu, cuda or cuda:N",
        "--num-threads": "CPU threads for PyTorch; 0: the cores this process may use, divided "
                         "among the processes of a torchrun"})
    group = parser.add_argument_group("PyTorch only (do not change what is trained)")
    group.add_argument("--compile", action="store_true", help="torch.compile the Unet (GPU): about a "
                       "minute of compiling for 10-20%% fewer milliseconds per step on an H200")
    return parser


class Trainer:
    """One run: model, EMA, AdamW, generators; `run()` trains up to config.steps."""

    def __init__(self, config: TrainConfig, dataset: Dataset, info: distributed.Dist, device: torch.device,
                 command: str, compile_model: bool = False):
        self.config, self.dataset, self.info, self.device = config, dataset, info, device
        self.commands = [command]  # the first command line, then those of each --resume
        self.out = Path(config.out)
        unet_cfg, diff_cfg = config.model.unet, config.model.diffusion
        self.schedule = diff_cfg.make_schedule()
        self.prediction_type = diff_cfg.prediction_type
        torch.manual_seed(config.seed)                    # the same initial weights on every rank
        self.unet = build_unet(unet_cfg).to(device)
        torch.manual_seed(config.seed * 1_000_003 + info.rank)  # dropout: each rank its own stream
        self.ema = EMA(self.unet, config.ema_decay, config.ema_warmup)
        fused = {"fused": True} if device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=config.lr, betas=config.adam_betas,
                                           weight_decay=config.weight_decay, **fused)
        # Data order is shared by all ranks (each slices its shard); the draws are per rank.
        self.sampler = EpochSampler(len(dataset), config.batch_size, np.random.default_rng([config.seed, 0]),
                                    info.world_size, info.rank)
        self.draw_rng = np.random.default_rng([config.seed, 1, info.rank])
        self.images = torch.from_numpy(dataset.images).to(device)  # the whole set lives on the device
        self.ops = TorchOps(device)
        self.step = 0
        self.last_loss: Optional[float] = None
        self.last_grid: Optional[np.ndarray] = None
        self.model = self.ddp = self.unet
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel
            self.model = self.ddp = DistributedDataParallel(
                self.unet, device_ids=[device] if device.type == "cuda" else None)
        if compile_model:
            self.model = torch.compile(self.model)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16)

    # --- one step -----------------------------------------------------------------------------

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.device.type == "cuda":
            tensor = tensor.pin_memory()  # so the copy below really runs asynchronously
        return tensor.to(self.device, non_blocking=True)

    def micro_batch_loss(self) -> torch.Tensor:
        cfg, (b, c, h, w) = self.config, (self.config.batch_size,) + self.dataset.images.shape[1:]
        index = self.sampler.next()
        d = training.draw(self.schedule, self.draw_rng, (b, c, h, w), self.prediction_type, cfg.loss)
        self_cond = cfg.model.unet.self_condition and self.draw_rng.random() < 0.5
        # One host-to-device copy for every float of the draw; t fits float32 exactly (T <= 1e5).
        pack = self._to_device(np.concatenate([d.noise.ravel(), d.t.astype(np.float32), d.signal_coef.ravel(),
                                               d.noise_coef.ravel(), d.target_x0.ravel(),
                                               d.target_eps.ravel(), d.weight]))
        noise = pack[:b * c * h * w].view(b, c, h, w)
        t, sig, sig_n, tgt_x0, tgt_eps, weight = pack[b * c * h * w:].view(6, b)
        sig, sig_n, tgt_x0, tgt_eps = (v.view(b, 1, 1, 1) for v in (sig, sig_n, tgt_x0, tgt_eps))
        x0 = self.images.index_select(0, self._to_device(index))
        x_t = training.q_sample(x0, noise, sig, sig_n)
        goal = training.target(x0, noise, tgt_x0, tgt_eps)
        with self.autocast:
            cond = None
            if cfg.model.unet.self_condition:
                cond = torch.zeros_like(x_t)  # a tensor either way: one graph for torch.compile
                if self_cond:  # Chen et al. 2022: condition on the model's own detached x0 estimate
                    with torch.no_grad():
                        raw = self.unet(x_t, t).float()
                        cond = training.x0_from_output(raw, x_t, sig, sig_n, self.prediction_type)
                        cond = cond.clamp(-1.0, 1.0)  # what the samplers feed back (clip_x0)
            output = self.model(x_t, t, cond)
        return training.weighted_mse(self.ops, output.float(), goal, weight)

    def train_step(self) -> torch.Tensor:
        cfg = self.config
        total = torch.zeros((), device=self.device)
        for i in range(cfg.grad_accum):
            last = i == cfg.grad_accum - 1
            sync = contextlib.nullcontext() if last or not self.info.enabled else self.ddp.no_sync()
            with sync:
                loss = self.micro_batch_loss() / cfg.grad_accum
                loss.backward()
            total += loss.detach()
        lr = cfg.lr * min(1.0, (self.step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.unet.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.unet, self.step)
        self.step += 1
        return total

    # --- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        from tqdm import tqdm
        cfg, info = self.config, self.info
        images_per_step = cfg.batch_size * cfg.grad_accum * info.world_size
        bar = tqdm(total=cfg.steps, initial=self.step, unit="step", disable=not info.is_main,
                   dynamic_ncols=True, file=sys.stderr)
        window_loss, window_steps, window_start = torch.zeros((), device=self.device), 0, time.perf_counter()
        while self.step < cfg.steps:
            window_loss += self.train_step()
            window_steps += 1
            bar.update(1)
            final = self.step == cfg.steps
            if self.step % cfg.log_every == 0 or final:  # the only host-device syncs of the loop
                if info.enabled:
                    torch.distributed.all_reduce(window_loss)
                    window_loss /= info.world_size
                loss = window_loss.item() / window_steps
                rate = images_per_step * window_steps / (time.perf_counter() - window_start)
                if not np.isfinite(loss):
                    raise TrainingDiverged(f"the loss became {loss} by step {self.step}; lower --lr, "
                                           "keep --grad-clip on, or try without --bf16")
                self.last_loss = loss
                bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.0f}")
                self._log({"step": self.step, "loss": loss, "images_per_s": rate,
                           "lr": self.optimizer.param_groups[0]["lr"]})
                window_loss.zero_()
                window_steps, window_start = 0, time.perf_counter()
            if info.is_main and ((cfg.sample_every and self.step % cfg.sample_every == 0) or final):
                self.sample_grid()
            if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or final:
                self.save()
        bar.close()
        digest = distributed.check_replicas(info, self.unet)
        if info.is_main and info.enabled:
            print(f"all {info.world_size} replicas hold identical weights (sha256 {digest[:16]})",
                  file=sys.stderr)

    def _log(self, row: dict) -> None:
        if self.info.is_main:
            with open(self.out / LOG_FILE, "a") as f:
                f.write(json.dumps(row) + "\n")

    def sample_grid(self) -> np.ndarray:
        """Samples from the EMA weights through the core's sampler, from fixed noise."""
        cfg, unet_cfg = self.config, self.config.model.unet
        count = 64 if self.device.type == "cuda" else 16
        model = TorchDenoiserModel(self.ema.module, self.device)
        images = sample(model, self.schedule, sampler=cfg.sample_sampler, steps=cfg.sample_steps,
                        shape=(count, unet_cfg.channels, unet_cfg.image_size, unet_cfg.image_size),
                        seed=GRID_SEED, ops=model.ops, prediction_type=self.prediction_type,
                        self_condition=unet_cfg.self_condition)
        self.last_grid = make_grid(images)
        save_png(self.out / "samples" / f"step_{self.step:07d}.png", self.last_grid)
        return self.last_grid

    # --- checkpoints --------------------------------------------------------------------------

    def save(self) -> None:
        """Training checkpoint (all ranks' RNG states, written by rank 0) and the model export."""
        rank_state = {"draws_rng": self.draw_rng.bit_generator.state,
                      "torch_cpu": torch.get_rng_state().numpy().tobytes().hex(),
                      "torch_cuda": (torch.cuda.get_rng_state(self.device).numpy().tobytes().hex()
                                     if self.device.type == "cuda" else None)}
        ranks = distributed.gather(self.info, rank_state)
        if not self.info.is_main:
            return
        tensors = {f"model.{n}": p for n, p in self.unet.named_parameters()}
        tensors.update({f"ema.{n}": p for n, p in self.ema.module.named_parameters()})
        opt_tensors, opt_json = trainer_state.optimizer_tensors(self.optimizer)
        tensors.update(opt_tensors)
        for r, state in enumerate(ranks):
            for kind in ("torch_cpu", "torch_cuda"):
                if state[kind] is not None:
                    tensors[f"rng.{kind}.{r}"] = torch.frombuffer(bytearray.fromhex(state[kind]), dtype=torch.uint8)
        meta = {"step": self.step, "world_size": self.info.world_size, "loss": self.last_loss,
                "commands": self.commands,
                "train_config": json.loads(self.config.to_json()), "optimizer": opt_json,
                "data_sampler": self.sampler.state(), "draws_rng": [s["draws_rng"] for s in ranks]}
        trainer_state.save_state(self.out, tensors, meta)
        self.export()

    def export(self) -> Path:
        notes = {"dataset": self.dataset.name, "steps": self.step, "framework": f"pytorch {torch.__version__}",
                 "global_batch": self.config.batch_size * self.config.grad_accum * self.info.world_size,
                 "training_command": self.commands[0],
                 "final_loss": None if self.last_loss is None else round(self.last_loss, 5)}
        if len(self.commands) > 1:
            notes["resumed_with"] = self.commands[1:]
        model_cfg = self.config.model.__class__(unet=self.config.model.unet,
                                                diffusion=self.config.model.diffusion, notes=notes)
        return save_checkpoint(self.out / "model", model_cfg, state_to_numpy(self.ema.module),
                               sample_grid=self.last_grid)

    def resume(self) -> None:
        tensors, meta = trainer_state.load_state(self.out)
        trainer_state.check_resumable(meta, self.config, self.info.world_size)
        with torch.no_grad():
            for prefix, module in (("model", self.unet), ("ema", self.ema.module)):
                for name, p in module.named_parameters():
                    p.copy_(tensors[f"{prefix}.{name}"])
        trainer_state.load_optimizer(self.optimizer, tensors, meta["optimizer"])
        self.sampler.load_state(meta["data_sampler"])
        self.draw_rng.bit_generator.state = meta["draws_rng"][self.info.rank]
        torch.set_rng_state(tensors[f"rng.torch_cpu.{self.info.rank}"])
        cuda_state = tensors.get(f"rng.torch_cuda.{self.info.rank}")
        if cuda_state is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(cuda_state, self.device)
        self.step, self.last_loss = int(meta["step"]), meta.get("loss")
        self.commands = list(meta.get("commands", [])) + self.commands


def configure_torch(device: torch.device, num_threads: int, local_world_size: int) -> int:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True          # pick the fastest conv kernels once
        torch.set_float32_matmul_precision("high")     # TF32 matmuls on Ampere and later
    # Denormals late in training make CPU kernels 5-20x slower; flush them to zero. NumPy measures
    # its float limits lazily and warns if it first does so with flushing on: measure them now.
    for dtype in (np.float16, np.float32, np.float64):
        np.finfo(dtype).smallest_subnormal
    torch.set_flush_denormal(True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = num_threads or max(1, cores // local_world_size)  # processes must not oversubscribe
    torch.set_num_threads(threads)
    return threads


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_arg_parser().parse_args(argv)
    info = distributed.Dist()
    try:
        info, device = distributed.setup(args.device)
        configure_torch(device, args.num_threads, int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size)))
        dataset = load_dataset(args.data, args.image_size)
        config = checked_config(args, image_size=dataset.image_size, channels=dataset.channels)
        out = Path(config.out)
        run_state.refuse_to_overwrite(out, args.resume)
        launcher = (f"torchrun --nproc_per_node {info.world_size} -m backends.pytorch.train"
                    if info.enabled else "python -m backends.pytorch.train")
        trainer = Trainer(config, dataset, info, device, f"{launcher} {shlex.join(argv)}", args.compile)
        if args.resume:
            trainer.resume()
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            run_state.write_atomically(out / run_state.RUN_CONFIG_FILE, config.to_json().encode())
        trainer.run()
        return 0
    except (ConfigError, DataError, CheckpointError, run_state.ResumeError) as e:
        print(f"error: {e}", file=sys.stderr)  # a setting or a file to fix: one line, no traceback
        return 2
    except (TrainingDiverged, distributed.ReplicasDiverged) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        distributed.teardown(info)


if __name__ == "__main__":
    sys.exit(main())
