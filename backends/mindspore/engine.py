"""The MindSpore step engine of the shared training loop (diffusion_core/training/loop.py).

The step itself is train_step.TrainStep (compiled graphs: gradients, then clipping + AdamW + EMA
over one flat vector); this adapter hands it the loop's micro-batches and moves its state in and
out of the run's checkpoint as canonical NumPy arrays.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from diffusion_core.data import Dataset
from diffusion_core.training import state as run_state
from diffusion_core.training.config import TrainConfig
from diffusion_core.training.engine import MicroBatch

from .distributed import Collectives, Dist

STATE_FORMAT = run_state.MINDSPORE_FORMAT


class MindSporeEngine:
    state_format = STATE_FORMAT
    free_on_resume = run_state.FREE_ON_RESUME

    def __init__(self, config: TrainConfig, dataset: Dataset, precision: Optional[str] = None,
                 info: Optional[Dist] = None):
        import mindspore as ms

        from .model import build_network
        from .train_step import TrainStep
        self.info = info or Dist()
        self.rank, self.world_size = self.info.rank, self.info.world_size
        self.collectives = Collectives(self.info)
        self.config = config
        self.framework = f"mindspore {ms.__version__}"
        self.device = str(ms.get_context("device_target")).lower()
        self.images = dataset.images
        self.declared = config.model.inputs
        self.network = build_network(config.model.network, seed=config.seed)  # equal on every rank
        if config.init_from:  # fine-tuning: start from a checkpoint's weights (EMA included)
            from diffusion_core.training.config import initial_weights

            from .model import load_state_from_numpy
            load_state_from_numpy(self.network, initial_weights(config))
        self.precision = precision or ("bfloat16" if config.bf16 else "float32")
        self.step_fn = TrainStep(self.network, config, self.precision,
                                 self.collectives if self.info.enabled else None)
        self._sampling_model = None

    def step(self, micro_batches: Sequence[MicroBatch], step_index: int) -> tuple[float, bool]:
        return self.step_fn.step([(self.images[mb.index], mb.draw, mb.use_self_condition, mb.class_labels)
                                  for mb in micro_batches], step_index)

    def mean_loss(self, losses: Sequence[float]) -> float:
        return self.collectives.mean(float(np.mean(losses)))

    def ema_model(self):
        """The EMA weights in an inference network behind the model contract (reused across grids)."""
        from .model import MindSporeDenoiserModel, build_network, load_state_from_numpy
        if self._sampling_model is None:
            self._sampling_model = MindSporeDenoiserModel(build_network(self.config.model.network),
                                                          self.declared)
        load_state_from_numpy(self._sampling_model.network, self.ema_weights())
        return self._sampling_model

    def ema_weights(self) -> dict[str, np.ndarray]:
        return self.step_fn.ema_weights()

    def state_arrays(self) -> dict[str, np.ndarray]:
        return self.step_fn.state_tensors()

    def state_meta(self) -> dict:
        return {"precision": self.precision}

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        if meta.get("precision", "float32") != self.precision:
            raise run_state.ResumeError(
                f"--resume: the checkpoint trained in {meta.get('precision')} and this run asks "
                f"for {self.precision}; use the same precision flags")
        self.step_fn.load_state_tensors(arrays)
        if self.config.model.network.__dict__.get("dropout", 0) > 0:
            import sys
            print("warning: MindSpore keeps dropout's random state inside compiled graphs where it "
                  "cannot be saved, so this resumed run draws other dropout masks than an "
                  "uninterrupted one would", file=sys.stderr)

    def rank_state(self) -> dict[str, np.ndarray]:
        return {}  # MindSpore's dropout generator lives inside compiled graphs (see load_state)

    def load_rank_state(self, arrays: dict[str, np.ndarray]) -> None:
        pass

    def gather(self, obj: Any) -> list[Any]:
        return self.collectives.gather(obj)

    def check_replicas(self) -> Optional[str]:
        if not self.info.enabled:
            return None
        return self.collectives.check_replicas(self.step_fn.state_tensors())
