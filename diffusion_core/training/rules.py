"""The schedules of a training run that every framework's engine must apply identically.

Defined once here; the PyTorch and MindSpore step engines call these functions, so their
learning rates and EMA decays cannot drift apart.
"""
from __future__ import annotations

import math

from .config import TrainConfig


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up over warmup_steps (step counts from 0), then constant (lr_decay "none") or
    falling to 0 over lr_decay_steps: linearly, or along half a cosine (Loshchilov & Hutter 2017,
    without restarts). A short decay at the end of a constant-rate run is the "decay phase" of
    warmup-stable-decay schedules (Hu et al. 2024); bench/results/null_class.md records one tried
    on the default model (not shipped)."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_decay == "none":
        return config.lr
    progress = min(1.0, (step - config.warmup_steps) / config.lr_decay_steps)
    if config.lr_decay == "linear":
        return config.lr * (1.0 - progress)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def ema_decay_at(n: int, decay: float, warmup: int) -> float:
    """Decay of the n-th EMA update (0-based): min(decay, (1 + n) / (10 + n)) during the first
    `warmup` updates (the num_updates rule of TensorFlow's ExponentialMovingAverage), so that early
    averages do not mostly remember the random initialisation; then `decay` (Ho et al. use 0.9999)."""
    if n < warmup:
        return min(decay, (1.0 + n) / (10.0 + n))
    return decay
