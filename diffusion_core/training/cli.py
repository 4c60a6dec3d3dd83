"""The trainer's command line, written once: every framework's `train` module calls run().

A framework supplies a `TrainerFramework`: its parser (the shared flags plus its own), how it sets
itself up (devices, threads, process groups), its step engine, and how it was launched. Errors a
user can fix (a flag, a data path, a run folder) exit 2 with one line and no traceback; a diverged
run exits 1.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Optional, Protocol, Sequence

from ..checkpoint import CheckpointError, remove_leftovers
from ..data import DataError, Dataset, load_dataset
from ..parsing import ConfigError
from . import state as run_state
from .config import TrainConfig, checked_config
from .engine import StepEngine
from .loop import MODEL_FOLDER, TrainingDiverged, TrainingLoop


class TrainerFramework(Protocol):
    fatal_errors: tuple[type[BaseException], ...]   # exit 1, like a diverged run

    def build_parser(self) -> argparse.ArgumentParser: ...

    def setup(self, args: argparse.Namespace) -> None:
        """Devices, threads, process group; ConfigError for a flag that cannot work here."""

    def make_engine(self, config: TrainConfig, dataset: Dataset, args: argparse.Namespace) -> StepEngine: ...

    def launcher(self) -> str:
        """How this process was started, e.g. 'torchrun --nproc_per_node 2 -m backends.pytorch.train'."""

    def teardown(self) -> None: ...


def run(framework: TrainerFramework, argv: Optional[Sequence[str]] = None) -> int:
    """Parse, set up, train (or resume), export; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = framework.build_parser().parse_args(argv)
    try:
        framework.setup(args)
        dataset = load_dataset(args.data, args.image_size)
        config = checked_config(args, image_size=dataset.image_size, channels=dataset.channels,
                                num_classes=len(dataset.class_names) if dataset.labels is not None else 0)
        out = Path(config.out)
        run_state.refuse_to_overwrite(out, args.resume)
        engine = framework.make_engine(config, dataset, args)
        loop = TrainingLoop(config, dataset, engine, f"{framework.launcher()} {shlex.join(argv)}")
        if args.resume:
            loop.resume()
        if loop.is_main:
            out.mkdir(parents=True, exist_ok=True)
            run_state.write_atomically(out / run_state.RUN_CONFIG_FILE, config.to_json().encode())
        loop.run()
        if loop.is_main and not loop.export_is_current():
            # A kill during the last export (or a deleted model/) left it missing or older than
            # the training state: rebuild it from the state, which is complete.
            loop.sample_grid()
            loop.export()
        if loop.is_main:
            remove_leftovers(out / MODEL_FOLDER)  # of a kill after the export was already in place
        if loop.is_main:
            print(f"the model is in {out / MODEL_FOLDER} (step {loop.step}); sample it with the "
                  f"backends.load_model API or serve it: python app.py --model-dir "
                  f"{shlex.quote(str(out / MODEL_FOLDER))}", file=sys.stderr)
        return 0
    except (ConfigError, DataError, CheckpointError, run_state.ResumeError) as e:
        print(f"error: {e}", file=sys.stderr)  # a setting or a file to fix: one line, no traceback
        return 2
    except (TrainingDiverged, *framework.fatal_errors) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        framework.teardown()
