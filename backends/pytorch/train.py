"""Train a diffusion model with PyTorch, in one process or data-parallel under torchrun.

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
use --num-threads 1 when other work shares the cores. --bf16 needs bf16 instructions on a CPU: on a
2-core AMD EPYC with AVX-512 bf16 and no AMX, 1 thread, batch 64, the default Unet, a bf16 step was
1.83-2.07x faster than fp32 (bench/train_throughput.py, alternated runs, 2026-12-02); without
bf16 instructions it is emulated: on a 2-core AVX2-only EPYC a bf16 step took 13 s against 1.7 s
in fp32 (the trainer warns when it sees such a CPU).

The loop is diffusion_core/training/loop.py, shared with the MindSpore trainer: every random
number of a step (data order, timesteps, noise, offset noise, the self-conditioning coin) comes
from its NumPy generators, which is what makes --resume exact and keeps the frameworks on one
recipe. This module only sets PyTorch up (devices, threads, torchrun) and supplies the step
engine (engine.py).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

import numpy as np
import torch

from diffusion_core.training import cli
from diffusion_core.training.config import TrainConfig, build_parser

from ..threads import default_threads
from . import distributed
from .engine import TorchEngine


def build_arg_parser() -> argparse.ArgumentParser:
    parser = build_parser("python -m backends.pytorch.train", __doc__, help_overrides={
        "--device": "auto (cuda if PyTorch sees a GPU, else cpu), cpu, cuda or cuda:N",
        "--num-threads": "CPU threads for PyTorch; 0: every usable core but one, divided among the "
                         "processes of a torchrun (2 threads were 30x slower than 1 on a 2-core "
                         "machine whose other core was busy; backends/threads.py)"})
    group = parser.add_argument_group("PyTorch only (do not change what is trained)")
    group.add_argument("--compile", action="store_true", help="torch.compile the network (GPU): about "
                       "a minute of compiling for 10-20%% fewer milliseconds per step on an H200")
    return parser


def configure_torch(device: torch.device, num_threads: int, local_world_size: int) -> int:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True          # pick the fastest conv kernels once
        torch.set_float32_matmul_precision("high")     # TF32 matmuls on Ampere and later
    # Denormals late in training make CPU kernels 5-20x slower; flush them to zero. NumPy measures
    # its float limits lazily and warns if it first does so with flushing on: measure them now.
    for dtype in (np.float16, np.float32, np.float64):
        np.finfo(dtype).smallest_subnormal
    torch.set_flush_denormal(True)
    # every usable core but one, shared by the processes of a torchrun (backends/threads.py)
    threads = num_threads or default_threads(local_world_size)
    torch.set_num_threads(threads)
    return threads


class PyTorchTrainer:
    """What the shared command line (diffusion_core/training/cli.py) needs from PyTorch."""

    fatal_errors = (distributed.ReplicasDiverged,)

    def __init__(self) -> None:
        self.info = distributed.Dist()
        self.device = torch.device("cpu")

    def build_parser(self) -> argparse.ArgumentParser:
        return build_arg_parser()

    def setup(self, args: argparse.Namespace) -> None:
        self.info, self.device = distributed.setup(args.device)
        configure_torch(self.device, args.num_threads,
                        int(os.environ.get("LOCAL_WORLD_SIZE", self.info.world_size)))

    def make_engine(self, config: TrainConfig, dataset, args: argparse.Namespace) -> TorchEngine:
        return TorchEngine(config, dataset, self.info, self.device, compile_model=args.compile)

    def launcher(self) -> str:
        if self.info.enabled:
            return f"torchrun --nproc_per_node {self.info.world_size} -m backends.pytorch.train"
        return "python -m backends.pytorch.train"

    def teardown(self) -> None:
        distributed.teardown(self.info)


def main(argv: Optional[list[str]] = None) -> int:
    from diffusion_core.allocator import tune_allocator
    tune_allocator()  # training steps reuse the same activation buffers (diffusion_core/allocator.py)
    return cli.run(PyTorchTrainer(), argv)


if __name__ == "__main__":
    sys.exit(main())
