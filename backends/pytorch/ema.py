"""Exponential moving average of the weights (Polyak averaging), the weights samples come from.

The decay of each update follows diffusion_core.training.rules.ema_decay_at, the rule every
framework's trainer applies.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from diffusion_core.training.rules import ema_decay_at


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
