"""Beta schedules and the NoiseSchedule that holds every derived coefficient, once, in float64.

Symbols follow Ho et al. 2020 (DDPM): beta_t, alpha_t = 1 - beta_t, alpha_bar_t = prod_{s<=t} alpha_s
(`alphas_cumprod`), and the forward marginal q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I).
Index t runs over 0 .. T-1 as in diffusers (the paper's t = 1 .. T shifted by one).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

# Use float64 for accuracy: products of ~1000 factors lose digits quickly in float32.
_F64 = np.float64


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Linear betas of Ho et al. 2020 (Sec. 4), given for T = 1000 and scaled by 1000 / T.

    Scaling keeps the total noise added (sum of betas) roughly constant when T changes, as in
    Nichol & Dhariwal 2021 and lucidrains' package. At T = 1000 this is exactly diffusers' "linear".
    """
    scale = 1000.0 / T
    return np.linspace(scale * beta_start, scale * beta_end, T, dtype=_F64)


def scaled_linear_betas(T: int, beta_start: float = 0.00085, beta_end: float = 0.012) -> np.ndarray:
    """Linear in sqrt(beta) (Latent Diffusion / Stable Diffusion), scaled by 1000 / T like `linear`."""
    scale = 1000.0 / T
    return np.linspace(math.sqrt(scale * beta_start), math.sqrt(scale * beta_end), T, dtype=_F64) ** 2


def betas_from_alpha_bar(T: int, alpha_bar: Callable[[float], float], max_beta: float = 0.999) -> np.ndarray:
    """Discretise a continuous alpha_bar(t), t in [0, 1]: beta_i = 1 - alpha_bar((i+1)/T) / alpha_bar(i/T).

    Nichol & Dhariwal 2021, Eq. 17 and the cap of beta at 0.999 that avoids a singularity near t = T.
    """
    ts = np.arange(T + 1, dtype=_F64) / T
    abar = np.array([alpha_bar(t) for t in ts], dtype=_F64)
    return np.minimum(1.0 - abar[1:] / abar[:-1], max_beta)


def cosine_betas(T: int, s: float = 0.008) -> np.ndarray:
    """Cosine schedule of Nichol & Dhariwal 2021 (Eq. 17, s = 0.008); diffusers' squaredcos_cap_v2."""
    return betas_from_alpha_bar(T, lambda t: math.cos((t + s) / (1 + s) * math.pi / 2) ** 2)


def sigmoid_betas(T: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> np.ndarray:
    """Sigmoid schedule of Jabri et al. 2022 / Chen 2023 (the default of lucidrains' package).

    alpha_bar(t) = (sigmoid(end / tau) - sigmoid((t (end - start) + start) / tau))
                   / (sigmoid(end / tau) - sigmoid(start / tau)), normalised to alpha_bar(0) = 1;
    betas clipped to [0, 0.999].
    """
    def sig(z):
        return 1.0 / (1.0 + np.exp(-z))
    t = np.linspace(0.0, 1.0, T + 1, dtype=_F64)
    v_start, v_end = sig(start / tau), sig(end / tau)
    abar = (v_end - sig((t * (end - start) + start) / tau)) / (v_end - v_start)
    abar = abar / abar[0]
    return np.clip(1.0 - abar[1:] / abar[:-1], 0.0, 0.999)


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Lin et al. 2023, Algorithm 1: shift and scale sqrt(alpha_bar) so alpha_bar[T-1] = 0 exactly.

    The first value is kept, so the least-noisy step is unchanged; the last step becomes pure noise,
    which fixes the train/test mismatch of schedules whose terminal SNR is not zero.
    """
    sqrt_abar = np.sqrt(np.cumprod(1.0 - betas))
    first, last = sqrt_abar[0], sqrt_abar[-1]
    sqrt_abar = (sqrt_abar - last) * first / (first - last)
    abar = sqrt_abar ** 2
    alphas = np.concatenate([abar[:1], abar[1:] / abar[:-1]])
    return 1.0 - alphas


SCHEDULES: dict[str, Callable[..., np.ndarray]] = {
    "linear": linear_betas,
    "scaled_linear": scaled_linear_betas,
    "cosine": cosine_betas,
    "sigmoid": sigmoid_betas,
}
SCHEDULES_WITH_BETA_RANGE = ("linear", "scaled_linear")  # the ones that read beta_start / beta_end


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=_F64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """The coefficients of the forward process q(x_t | x_0) that samplers and trainers read, float64.

    Samplers derive everything else (posterior means and variances of any respaced subsequence,
    sigmas) from alphas_cumprod at the timesteps they visit, so that is all this holds.
    """

    betas: np.ndarray
    name: str = "custom"
    alphas_cumprod: np.ndarray = field(init=False)                  # alpha_bar_t
    sqrt_alphas_cumprod: np.ndarray = field(init=False)             # signal scale of x_t
    sqrt_one_minus_alphas_cumprod: np.ndarray = field(init=False)   # noise scale of x_t
    snr: np.ndarray = field(init=False)                             # alpha_bar / (1 - alpha_bar), Kingma et al. 2021

    def __post_init__(self) -> None:
        betas = np.asarray(self.betas, dtype=_F64)
        if betas.ndim != 1 or len(betas) < 2:
            raise ValueError(f"betas must be a 1-D array of at least 2 values, got shape {betas.shape}")
        inside = np.isfinite(betas) & (betas > 0) & (betas < 1)
        inside[-1] = np.isfinite(betas[-1]) and 0 < betas[-1] <= 1  # 1 = zero terminal SNR
        if not inside.all():
            bad = int(np.argmin(inside))
            raise ValueError(f"betas must lie in (0, 1) (the last may be 1 for zero terminal SNR); "
                             f"betas[{bad}] = {betas[bad]!r}")
        abar = np.cumprod(1.0 - betas)
        derived = {"betas": betas, "alphas_cumprod": abar, "sqrt_alphas_cumprod": np.sqrt(abar),
                   "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - abar), "snr": abar / (1.0 - abar)}
        for key, value in derived.items():
            object.__setattr__(self, key, _frozen(value))

    @property
    def num_train_timesteps(self) -> int:
        return len(self.betas)

    @property
    def zero_terminal_snr(self) -> bool:
        return bool(self.alphas_cumprod[-1] == 0.0)

    def __repr__(self) -> str:
        return (f"NoiseSchedule(name={self.name!r}, T={self.num_train_timesteps}, "
                f"alpha_bar[0]={self.alphas_cumprod[0]:.6g}, alpha_bar[T-1]={self.alphas_cumprod[-1]:.6g})")


def make_schedule(name: str, num_train_timesteps: int = 1000, *, zero_terminal_snr: bool = False,
                  **kwargs) -> NoiseSchedule:
    """Build a NoiseSchedule by name (see SCHEDULES); kwargs go to the beta function."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    if not isinstance(num_train_timesteps, int) or num_train_timesteps < 2:
        raise ValueError(f"num_train_timesteps must be an integer >= 2, got {num_train_timesteps!r}")
    ignored = sorted({"beta_start", "beta_end"} & set(kwargs)) if name not in SCHEDULES_WITH_BETA_RANGE else []
    if ignored:
        raise ValueError(f"the {name} schedule does not read {' or '.join(ignored)}; drop them, or use "
                         f"one of {', '.join(SCHEDULES_WITH_BETA_RANGE)}")
    betas = SCHEDULES[name](num_train_timesteps, **kwargs)
    if zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
        name = f"{name}+zero_terminal_snr"
    return NoiseSchedule(betas=betas, name=name)
