"""What every sampler shares: options, the per-step callback record, the noise source, the spec."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Optional

import numpy as np

from ..ops import Ops, Tensor
from ..denoise import Denoiser
from ..schedules import NoiseSchedule
from ..timesteps import SPACINGS

VARIANCE_TYPES = ("fixed_small", "fixed_large")


@dataclass(frozen=True)
class SamplerOptions:
    """Settings a user may change; each sampler declares which of them it reads.

    Defaults: `trailing` spacing (Lin et al. 2023 show `leading` never visits t = T-1 and so never
    starts from pure noise), x0 clipped to [-1, 1] because images live there.
    """

    spacing: str = "trailing"          # leading | trailing | linspace | logsnr (timesteps.py)
    steps_offset: int = 0              # added to `leading` timesteps (Stable Diffusion uses 1)
    eta: float = 0.0                   # ddim: 0 deterministic, 1 = DDPM-like noise (Song et al. Eq. 16)
    variance: str = "fixed_small"      # ddpm: posterior variance beta~_t, or beta_t (fixed_large)
    karras_sigmas: bool = False        # sigma-space samplers: Karras et al. 2022 Eq. 5 spacing
    solver_order: Optional[int] = None  # multistep solvers: highest order (None: the sampler's own)
    lower_order_final: bool = True     # multistep solvers: lower the order on the last steps
    clip_x0: bool = True               # clamp x0 estimates to [-1, 1]
    threshold_ratio: Optional[float] = None  # dynamic thresholding (Saharia et al. 2022), e.g. 0.995
    threshold_max: float = 1.0

    def __post_init__(self) -> None:
        if self.spacing not in SPACINGS:
            raise ValueError(f"unknown spacing {self.spacing!r}; choose one of {', '.join(SPACINGS)}")
        if self.variance not in VARIANCE_TYPES:
            raise ValueError(f"unknown variance {self.variance!r}; choose one of {', '.join(VARIANCE_TYPES)}")
        if not (isinstance(self.eta, (int, float)) and 0.0 <= self.eta <= 1.0):
            raise ValueError(f"eta must be between 0 (deterministic DDIM) and 1 (DDPM-like), got {self.eta!r}")
        if not isinstance(self.steps_offset, int) or self.steps_offset < 0:
            raise ValueError(f"steps_offset must be a non-negative integer, got {self.steps_offset!r}")

        if self.solver_order is not None and self.solver_order not in (1, 2, 3):
            raise ValueError(f"solver_order must be 1, 2 or 3, got {self.solver_order!r}")

    def changed(self) -> set[str]:
        """Names of the options that differ from their defaults."""
        default = SamplerOptions()
        return {f.name for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)}


@dataclass(frozen=True)
class StepInfo:
    """Handed to the callback after each step: enough for a progress bar and an x0 preview."""

    index: int          # 0-based step number
    total: int          # number of steps
    t: float            # the timestep the model was evaluated at
    x: Tensor           # the sample after this step (backend tensor)
    x0: Tensor          # the current estimate of the clean image (backend tensor)


Callback = Callable[[StepInfo], Any]


def noise_generators(seed: Optional[int]) -> tuple[np.random.Generator, np.random.Generator]:
    """Two independent streams from one seed: the starting noise x_T, and the per-step noise.

    Kept apart so that passing the x_T a seed would draw changes nothing, and so that changing the
    sampler's number of noisy steps never shifts the starting image.
    """
    initial, steps = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(initial), np.random.default_rng(steps)


class NoiseSource:
    """Gaussian noise from a seeded NumPy generator, handed to the backend with `ops.asarray`.

    Drawing in NumPy is what makes one seed give the same images on every backend.
    """

    def __init__(self, rng: np.random.Generator, ops: Ops):
        self.rng = rng
        self.ops = ops

    def __call__(self, shape: tuple[int, ...]) -> Tensor:
        return self.ops.asarray(self.rng.standard_normal(shape, dtype=np.float32))


@dataclass(frozen=True)
class SamplerContext:
    """Everything a sampler loop reads, built fresh for each call (so nothing outlives it)."""

    denoise: Denoiser
    schedule: NoiseSchedule
    timesteps: np.ndarray
    noise: NoiseSource
    options: SamplerOptions
    callback: Optional[Callback] = None
    cancel: Optional[Any] = None                 # a diffusion_core.cancel.CancelToken

    def report(self, index: int, t: float, x: Tensor, x0: Tensor) -> None:
        """Called by every sampler after each step: the progress callback, then the cancel check."""
        if self.cancel is not None:
            self.cancel.check()
        if self.callback is not None:
            self.callback(StepInfo(index=index, total=len(self.timesteps), t=float(t), x=x, x0=x0))


SamplerFn = Callable[[SamplerContext, Tensor], Tensor]


@dataclass(frozen=True)
class SamplerSpec:
    """A registry entry: the loop, its paper, and the options it reads."""

    name: str
    fn: SamplerFn
    title: str                                   # for dropdowns: "DDIM (Song et al. 2021)"
    options: frozenset[str] = field(default_factory=frozenset)
    fractional_timesteps: bool = False           # may evaluate the model between integer t
    # the settings `sample()` uses when the caller gives no SamplerOptions and does not override
    # them: held once here, read by the API and the app
    recommended: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    default_steps: int = 50
    evals_per_step: Callable[[int], int] = staticmethod(lambda steps: steps)  # type: ignore

    def model_evaluations(self, steps: int) -> int:
        return self.evals_per_step(steps)


# options every sampler reads
COMMON_OPTIONS = frozenset({"spacing", "steps_offset", "clip_x0", "threshold_ratio", "threshold_max"})
# and the multistep solvers' order options
MULTISTEP_OPTIONS = frozenset({"karras_sigmas", "solver_order", "lower_order_final"})


def vp_levels(sigma: float) -> tuple[float, float, float]:
    """(alpha_t, sigma_t, lambda_t) of the VP process whose VE noise level is `sigma` > 0.

    alpha_t = 1 / sqrt(1 + sigma^2), sigma_t = sigma alpha_t, lambda_t = log(alpha_t / sigma_t)
    = -log(sigma): the half log-SNR that DPM-Solver and UniPC integrate in.
    """
    alpha = 1.0 / math.sqrt(1.0 + sigma * sigma)
    return alpha, sigma * alpha, -math.log(sigma)


def multistep_order(options: SamplerOptions, default: int, step: int, steps: int, history: int) -> int:
    """The order a multistep solver uses at `step` (0-based) of `steps`, with `history` earlier outputs.

    Never more than the outputs at hand allow; with `lower_order_final`, at most (steps - step)
    so the last steps, which are long in lambda at few steps, do not extrapolate far.
    """
    order = options.solver_order or default
    if options.lower_order_final:
        order = min(order, steps - step)
    return max(1, min(order, history + 1))
