"""The schedules of a training run that every framework's engine must apply identically.

Defined once here; the PyTorch and MindSpore step engines call these functions, so their
learning rates and EMA decays cannot drift apart.
"""
from __future__ import annotations

from .config import TrainConfig


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up over warmup_steps (step counts from 0), then constant."""
    if config.warmup_steps:
        return config.lr * min(1.0, (step + 1) / config.warmup_steps)
    return config.lr


def ema_decay_at(n: int, decay: float, warmup: int) -> float:
    """Decay of the n-th EMA update (0-based): min(decay, (1 + n) / (10 + n)) during the first
    `warmup` updates (the num_updates rule of TensorFlow's ExponentialMovingAverage), so that early
    averages do not mostly remember the random initialisation; then `decay` (Ho et al. use 0.9999)."""
    if n < warmup:
        return min(decay, (1.0 + n) / (10.0 + n))
    return decay
