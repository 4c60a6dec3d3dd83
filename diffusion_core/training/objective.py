"""The framework-neutral half of a training step: what to draw, what to mix, what to aim at.

A step of Ho et al. 2020, Algorithm 1, generalised to any prediction type and loss weighting:
  t ~ U{0..T-1}, eps ~ N(0, I) (+ offset noise), x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps,
  loss = mean_b w(t_b) * mean_pixels((model(x_t, t) - target)^2).
Every target is a linear mix of x0 and eps, so a backend only needs the coefficients below.
All randomness comes from one NumPy generator, so a run resumes exactly from its saved state and
PyTorch and MindSpore trainers see the same draws.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ops import Ops, Tensor
from ..prediction import PREDICTION_TYPES
from ..schedules import NoiseSchedule

LOSS_WEIGHTINGS = ("none", "p2", "min_snr")


@dataclass(frozen=True)
class LossConfig:
    weighting: str = "none"      # none | p2 (Choi et al. 2022) | min_snr (Hang et al. 2023)
    p2_gamma: float = 1.0        # p2: weight (k + SNR)^-gamma on the eps loss
    p2_k: float = 1.0
    min_snr_gamma: float = 5.0   # min_snr: weight min(SNR, gamma) on the x0 loss
    offset_noise: float = 0.0    # Guttenberg 2023: + strength * N(0, 1) per (sample, channel)

    def __post_init__(self) -> None:
        if self.weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"unknown loss weighting {self.weighting!r}; choose one of "
                             f"{', '.join(LOSS_WEIGHTINGS)}")
        if self.p2_k <= 0 or self.p2_gamma < 0 or self.min_snr_gamma <= 0 or self.offset_noise < 0:
            raise ValueError("need p2_k > 0, p2_gamma >= 0, min_snr_gamma > 0 and offset_noise >= 0")


def loss_weight(schedule: NoiseSchedule, t: np.ndarray, prediction_type: str, config: LossConfig) -> np.ndarray:
    """Per-sample weight on the MSE of the model's own output (float64, shape of t).

    Weightings are defined on one loss and carried to the others by the exact ratios
    ||x0 err||^2 = ||eps err||^2 / SNR and ||v err||^2 = ||eps err||^2 (1 + SNR) / SNR:
      p2 (Choi et al. 2022, Eq. 8):      w_eps = (k + SNR)^-gamma
      min_snr (Hang et al. 2023, Eq. 9): w_x0 = min(SNR, gamma), i.e. w_eps = min(SNR, gamma) / SNR,
                                         w_v = min(SNR, gamma) / (SNR + 1)
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction type {prediction_type!r}; choose one of {PREDICTION_TYPES}")
    t = np.asarray(t)
    if config.weighting == "none":
        return np.ones(t.shape, dtype=np.float64)
    snr = schedule.snr[t]
    if config.weighting == "p2":
        w_eps = (config.p2_k + snr) ** -config.p2_gamma
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            w_eps = np.where(snr > 0, np.minimum(snr, config.min_snr_gamma) / snr, 1.0)
    # ratio of this objective's MSE to the eps MSE at the same error
    with np.errstate(divide="ignore"):
        ratio = {"eps": np.ones_like(snr), "x0": 1.0 / snr, "v": (1.0 + snr) / snr}[prediction_type]
    return np.where(np.isfinite(ratio) & (snr > 0), w_eps / ratio, w_eps if prediction_type == "eps" else 1.0)


@dataclass(frozen=True)
class TrainingDraw:
    """One batch's draws and coefficients; arrays are float32 shaped (B, 1, ..., 1) unless noted."""

    t: np.ndarray             # int64 (B,): training timesteps
    noise: np.ndarray         # float32, shaped like x0: eps (offset noise included)
    signal_coef: np.ndarray   # sqrt(abar_t):       x_t = signal_coef * x0 + noise_coef * eps
    noise_coef: np.ndarray    # sqrt(1 - abar_t)
    target_x0: np.ndarray     # target = target_x0 * x0 + target_eps * eps
    target_eps: np.ndarray
    weight: np.ndarray        # float32 (B,): loss weight per sample


def target_coefficients(schedule: NoiseSchedule, t: np.ndarray, prediction_type: str
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(c_x0, c_eps) with target = c_x0 x0 + c_eps eps; v = a eps - s x0 (Salimans & Ho 2022)."""
    a, s = schedule.sqrt_alphas_cumprod[t], schedule.sqrt_one_minus_alphas_cumprod[t]
    if prediction_type == "eps":
        return np.zeros_like(a), np.ones_like(a)
    if prediction_type == "x0":
        return np.ones_like(a), np.zeros_like(a)
    if prediction_type == "v":
        return -s, a
    raise ValueError(f"unknown prediction type {prediction_type!r}; choose one of {PREDICTION_TYPES}")


def draw(schedule: NoiseSchedule, rng: np.random.Generator, x_shape: tuple[int, ...],
         prediction_type: str, config: LossConfig = LossConfig()) -> TrainingDraw:
    """Draw t (uniform, Ho et al. Alg. 1) and eps for one batch and gather every coefficient once."""
    batch = int(x_shape[0])
    t = rng.integers(0, schedule.num_train_timesteps, size=batch, dtype=np.int64)
    noise = rng.standard_normal(tuple(x_shape), dtype=np.float32)
    if config.offset_noise > 0:
        offset_shape = tuple(x_shape[:2]) + (1,) * (len(x_shape) - 2)
        noise = noise + np.float32(config.offset_noise) * rng.standard_normal(offset_shape, dtype=np.float32)
    c_x0, c_eps = target_coefficients(schedule, t, prediction_type)
    shape = (batch,) + (1,) * (len(x_shape) - 1)

    def col(a):
        return np.asarray(a, dtype=np.float32).reshape(shape)
    return TrainingDraw(t=t, noise=noise, signal_coef=col(schedule.sqrt_alphas_cumprod[t]),
                        noise_coef=col(schedule.sqrt_one_minus_alphas_cumprod[t]),
                        target_x0=col(c_x0), target_eps=col(c_eps),
                        weight=loss_weight(schedule, t, prediction_type, config).astype(np.float32))


def q_sample(x0: Tensor, noise: Tensor, signal_coef: Tensor, noise_coef: Tensor) -> Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (Ho et al. 2020, Eq. 4)."""
    return signal_coef * x0 + noise_coef * noise


def target(x0: Tensor, noise: Tensor, target_x0: Tensor, target_eps: Tensor) -> Tensor:
    return target_x0 * x0 + target_eps * noise


def x0_from_output(raw: Tensor, x_t: Tensor, signal_coef: Tensor, noise_coef: Tensor,
                   prediction_type: str) -> Tensor:
    """The model's x0 estimate with per-sample coefficients (for self-conditioning in training)."""
    if prediction_type == "eps":
        return (x_t - noise_coef * raw) / signal_coef
    if prediction_type == "x0":
        return raw
    return signal_coef * x_t - noise_coef * raw


def weighted_mse(ops: Ops, output: Tensor, goal: Tensor, weight: Tensor) -> Tensor:
    """mean_b weight_b * mean_pixels((output - goal)^2), as a backend scalar tensor."""
    diff = output - goal
    return (weight * ops.mean_per_sample(diff * diff)).mean()
