"""Train a diffusion model with MindSpore: the PyTorch trainer's loop, recipe and command line.

examples:
  python -m backends.mindspore.train --data digits --steps 2000 --out runs/digits-ms
  python -m backends.mindspore.train --data fashion-mnist --steps 20000 --batch-size 128 --out runs/f
  python -m backends.mindspore.train <the same flags> --resume     # continue exactly

The flags are the PyTorch trainer's (diffusion_core/train_config.py builds both). The run folder
--out receives train_config.json, train_log.jsonl, samples/ (a grid from the EMA weights every
--sample-every steps, always from the same noise), the training checkpoint
training_state.safetensors, and model/: the canonical checkpoint (config.json, model.safetensors
of the EMA weights, README.md, samples.png) that every backend loads, PyTorch included.

The loop is diffusion_core/training/loop.py, shared with the PyTorch trainer: every random number
of a step (data order, timesteps, noise, the self-conditioning coin) comes from its NumPy
generators, which makes --resume exact. This module sets MindSpore up and supplies the step engine
(engine.py), whose step runs as compiled MindSpore graphs (train_step.py).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from diffusion_core.training import cli
from diffusion_core.training.config import TrainConfig, build_parser

from ..threads import default_threads
from . import distributed


def build_arg_parser() -> argparse.ArgumentParser:
    return build_parser("python -m backends.mindspore.train", __doc__, help_overrides={
        "--device": "auto (MindSpore's default device), cpu, gpu or ascend",
        "--num-threads": "CPU threads for MindSpore's kernels (0: every usable core but one, shared "
                         "by msrun's workers; backends/threads.py)",
        "--bf16": "bfloat16 mixed precision (GPU/Ascend; MindSpore has no bfloat16 CPU kernels)"})


class MindSporeTrainer:
    """What the shared command line (diffusion_core/training/cli.py) needs from MindSpore."""

    fatal_errors = (distributed.ReplicasDiverged,)

    def __init__(self) -> None:
        self.info = distributed.Dist()

    def build_parser(self) -> argparse.ArgumentParser:
        return build_arg_parser()

    def setup(self, args: argparse.Namespace) -> None:
        from . import prepare
        # every usable core but one, shared by msrun's workers (backends/threads.py)
        threads = args.num_threads or default_threads(distributed.launched_world_size())
        prepare(None if args.device == "auto" else args.device, threads)
        self.info = distributed.setup()

    def make_engine(self, config: TrainConfig, dataset, args: argparse.Namespace):
        from .engine import MindSporeEngine
        return MindSporeEngine(config, dataset, info=self.info)

    def launcher(self) -> str:
        if self.info.enabled:
            return (f"msrun --worker_num {self.info.world_size} --local_worker_num "
                    f"{self.info.world_size} backends/mindspore/launch.py")
        return "python -m backends.mindspore.train"

    def teardown(self) -> None:
        if self.info.enabled:  # no rank may exit while another still sends
            distributed.Collectives(self.info).barrier()


def main(argv: Optional[list[str]] = None) -> int:
    from diffusion_core.allocator import tune_allocator
    tune_allocator()  # training steps reuse the same activation buffers (diffusion_core/allocator.py)
    return cli.run(MindSporeTrainer(), argv)


if __name__ == "__main__":
    sys.exit(main())
