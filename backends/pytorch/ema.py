"""Exponential moving average of the weights (Polyak averaging), the weights samples come from.

Ho et al. 2020 sample from an EMA with decay 0.9999. Early in training the EMA would mostly remember
the random initialisation, so the decay ramps up first (the num_updates rule of TensorFlow's
ExponentialMovingAverage): decay_n = min(ema_decay, (1 + n) / (10 + n)) for the first
`warmup` updates, then ema_decay. n counts optimizer steps from 0.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay_at(n: int, decay: float, warmup: int) -> float:
    """Decay of the n-th update (0-based): ramped during the warm-up, `decay` afterwards."""
    if n < warmup:
        return min(decay, (1.0 + n) / (10.0 + n))
    return decay


class EMA:
    """A frozen copy of a module whose parameters track an EMA of the live module's parameters."""

    def __init__(self, model: nn.Module, decay: float, warmup: int):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self._shadow = list(self.module.parameters())

    @torch.no_grad()
    def update(self, model: nn.Module, n: int) -> None:
        """ema <- decay * ema + (1 - decay) * weights, as one fused lerp over every tensor."""
        weight = 1.0 - ema_decay_at(n, self.decay, self.warmup)
        live = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(self._shadow, live, weight)
