"""What a framework provides to the shared training loop (loop.py): a small step engine.

The loop owns everything framework-free: data order, the random draws of every step, logging,
sample grids, checkpoints and resume, divergence checks. An engine owns the network and its
optimizer on its framework: one optimizer step from the loop's draws, and its state as NumPy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol, Sequence

import numpy as np

from .objective import TrainingDraw


@dataclass(frozen=True)
class MicroBatch:
    """One micro-batch as the loop drew it; the engine turns it into tensors."""

    index: np.ndarray            # int64 (B,): which dataset images (the engine holds the images)
    draw: TrainingDraw           # t, noise and every coefficient of the loss
    use_self_condition: bool     # Chen et al. 2022: the coin for feeding the model's own estimate
    class_labels: Optional[np.ndarray] = None   # int64 (B,), dropped ones set to the null class


class StepEngine(Protocol):
    framework: str                       # "pytorch 2.13.0", recorded in notes and run states
    state_format: str                    # names the engine in training_state.safetensors
    free_on_resume: frozenset[str]       # TrainConfig fields a resumed run may change
    device: str                          # "cpu", "cuda:0", "gpu", ...
    rank: int
    world_size: int

    def step(self, micro_batches: Sequence[MicroBatch], step_index: int) -> tuple[Any, bool]:
        """One optimizer step (learning rate and EMA decay from rules.py at step_index); returns
        (the loss as a backend scalar, whether the update was applied: False when float16
        gradients overflowed and the step was skipped)."""

    def mean_loss(self, losses: Sequence[Any]) -> float:
        """Mean of step losses as a float, averaged over all processes (a host sync)."""

    def ema_model(self) -> Any:
        """The EMA weights behind the model contract, with `.ops` (for sample grids)."""

    def ema_weights(self) -> dict[str, np.ndarray]:
        """The EMA weights under canonical names (what the exported checkpoint holds)."""

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every tensor a resumed run needs: weights, EMA, optimizer state, ... (rank 0's)."""

    def state_meta(self) -> dict:
        """JSON-ready engine state that is not an array (optimizer hyper-parameters, precision)."""

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Restore state_arrays/state_meta; KeyError names a missing tensor, ResumeError a mismatch."""

    def rank_state(self) -> dict[str, np.ndarray]:
        """This process's framework RNG states (dropout), saved for every rank."""

    def load_rank_state(self, arrays: dict[str, np.ndarray]) -> None:
        ...

    def gather(self, obj: Any) -> list[Any]:
        """Every process's obj, in rank order ([obj] in a single process)."""

    def check_replicas(self) -> Optional[str]:
        """sha256 of the weights after training, checked equal on every process (None: 1 process)."""
