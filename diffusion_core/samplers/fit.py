"""Timesteps fitted on a model: the steps a sampler should take for a given number of calls.

Uniform log-SNR steps are a good guess for any model; the best steps depend on where this model's
probability-flow ODE bends. Like Align Your Steps (Sabour et al. 2024) and optimised time steps
(Xue et al. 2024) the schedule is fitted per model and sampler and stored with the checkpoint;
the objective is the direct one of learned discretisations (LD3, Tong et al. 2024): the distance
between what the sampler draws with n calls and what an accurate solve of the same ODE draws from
the same starting noise (the teacher: DPM-Solver++(3M) on many log-SNR steps). Fitting needs no
data and no gradients, only model calls, so it runs on any backend.

Parametrisation: the first timestep stays where log-SNR spacing starts (the starting noise is
drawn for it); the others are positions u in (0, 1] along lambda = -log sigma from there to
t = 0, kept strictly increasing. Coordinate search: move one position by +-delta of its room
between neighbours, keep a move that lowers the error, halve delta after a sweep without one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from ..schedules import NoiseSchedule
from ..timesteps import sigma_at, spaced_timesteps, t_from_sigma

# Deterministic samplers that take fractional timesteps: a stochastic one has no single answer to
# be close to, and ddpm/ddim index the schedule at integers (rounding would undo small moves).
FITTABLE = ("dpmpp_2m", "dpmpp_3m", "unipc", "euler", "heun")


@dataclass
class TimestepFit:
    """What a fit found: the timesteps, and the error before and after on fit and held-out noise."""

    sampler: str
    steps: int
    timesteps: np.ndarray
    start: np.ndarray                  # the log-SNR timesteps the search began from
    fit_error: tuple[float, float]     # RMS distance to the teacher (start, fitted), fit batch
    held_out_error: tuple[float, float]  # the same on noise the search never saw
    evaluations: int                   # sampler runs the search made
    history: list[float] = field(default_factory=list)

    def summary(self) -> str:
        (a, b), (c, d) = self.fit_error, self.held_out_error
        return (f"{self.sampler} {self.steps} steps: RMS error to the teacher {a:.4f} -> {b:.4f} "
                f"(held out {c:.4f} -> {d:.4f}, {c / max(d, 1e-12):.2f}x), {self.evaluations} runs; "
                f"timesteps {np.array2string(self.timesteps, precision=1, separator=', ')}")


def _timesteps(schedule: NoiseSchedule, t_first: float, u: np.ndarray) -> np.ndarray:
    """Descending timesteps: t_first, then positions u along lambda from t_first to t = 0."""
    lam_start = -np.log(float(sigma_at(schedule, t_first)))
    lam_end = -np.log(float(sigma_at(schedule, 0.0)))
    lam = lam_start + np.asarray(u) * (lam_end - lam_start)
    ts = np.concatenate([[t_first], t_from_sigma(schedule, np.exp(-lam))])
    ts[-1] = 0.0 if u[-1] >= 1.0 else ts[-1]
    return ts


def fit_timesteps(model: Callable[..., Any], schedule: NoiseSchedule, *, sampler: str, steps: int,
                  x_fit: np.ndarray, x_held_out: np.ndarray, teacher_steps: int = 100,
                  min_delta: float = 0.02, max_evaluations: int = 400,
                  progress: Optional[Callable[[str], None]] = None, **sample_kwargs: Any) -> TimestepFit:
    """Fit `steps` timesteps for `sampler` on `model` (the sample() model contract).

    x_fit / x_held_out: starting noise (B, C, H, W) the search scores on / reports on.
    sample_kwargs: what sample() needs to call the model (ops, prediction_type, model_inputs, ...).
    """
    from . import sample
    if sampler not in FITTABLE:
        raise ValueError(f"timesteps can be fitted for {', '.join(FITTABLE)}, not {sampler!r} "
                         "(stochastic samplers have no single answer to match; ddpm/ddim step on integers)")
    if not isinstance(steps, int) or not 3 <= steps <= 100:
        raise ValueError(f"fit between 3 and 100 steps, got {steps!r} (fewer leave nothing to move)")
    for key in ("timesteps", "fitted_timesteps", "spacing", "karras_sigmas", "steps", "x_T"):
        if key in sample_kwargs:
            raise ValueError(f"fit_timesteps sets {key!r} itself")
    start = spaced_timesteps("logsnr", schedule.num_train_timesteps, steps, schedule=schedule,
                             fractional=True)

    def solve(x_T: np.ndarray, **how: Any) -> np.ndarray:
        return np.asarray(sample(model, schedule, x_T=x_T, seed=0, **how, **sample_kwargs), np.float64)

    teacher = {"sampler": "dpmpp_3m", "steps": teacher_steps, "spacing": "logsnr"}
    target_fit, target_held = solve(x_fit, **teacher), solve(x_held_out, **teacher)

    def rms(x_T: np.ndarray, target: np.ndarray, ts: np.ndarray) -> float:
        return float(np.sqrt(np.mean((solve(x_T, sampler=sampler, timesteps=ts) - target) ** 2)))

    # u of the log-SNR start: evenly spaced in (0, 1]
    u = np.linspace(0.0, 1.0, steps)[1:]
    best = rms(x_fit, target_fit, start)
    history, evaluations, delta = [best], 1, 0.5
    while delta >= min_delta and evaluations < max_evaluations:
        improved = False
        for i in range(len(u)):
            lo = u[i - 1] if i > 0 else 0.0
            hi = u[i + 1] if i + 1 < len(u) else 1.0
            room = (hi - lo) / 2 if i + 1 < len(u) else (hi - lo)
            for move in (-delta * room, delta * room):
                cand = u.copy()
                cand[i] = min(max(u[i] + move, lo + 1e-4), hi if i + 1 == len(u) else hi - 1e-4)
                if cand[i] == u[i]:
                    continue
                err = rms(x_fit, target_fit, _timesteps(schedule, float(start[0]), cand))
                evaluations += 1
                if err < best * (1 - 1e-4):
                    u, best, improved = cand, err, True
                    break
        history.append(best)
        if progress:
            progress(f"{sampler} {steps} steps: delta {delta:.3f}, error {best:.5f}, {evaluations} runs")
        if not improved:
            delta /= 2
    fitted = _timesteps(schedule, float(start[0]), u)
    return TimestepFit(sampler, steps, fitted, start, (history[0], best),
                       (rms(x_held_out, target_held, start), rms(x_held_out, target_held, fitted)),
                       evaluations, history)


__all__ = ["FITTABLE", "TimestepFit", "fit_timesteps"]
