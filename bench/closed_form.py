"""Samplers alone, on a problem with a known answer: ours and diffusers' schedulers side by side.

    OMP_NUM_THREADS=1 python -m bench.closed_form                  # 20000 pixels, ~1 minute
    python -m bench.closed_form --pixels 4000 --calls 5,10         # quicker

Data: every pixel independently from a mixture of narrow Gaussians (MEANS, STD, WEIGHTS), so the
optimal denoiser E[x0 | x_t] is closed form (per component a Gaussian posterior, weighted by the
component's likelihood of x_t). Every sampler, ours and diffusers', is fed this same oracle as an
eps-prediction model on the cosine schedule (diffusers' squaredcos_cap_v2), at the same number of
model calls (ours also with timesteps fitted on the oracle from other noise, the "fitted" rows),
and scored by the 1-Wasserstein distance between its pixel values and the true mixture (integral
of |F_samples - F_true|). The floor is the distance of as many exact draws.
Writes bench/results/closed_form.json and closed_form.png (one line per sampler configuration).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from diffusion_core import make_schedule, sample
from diffusion_core.timesteps import sigma_at

MEANS = np.array([-0.8, -0.2, 0.5, 0.9])
WEIGHTS = np.array([0.3, 0.2, 0.3, 0.2])
STD = 0.04
SCHEDULE = make_schedule("cosine")
RESULTS = Path(__file__).resolve().parent / "results"

FIT = {"fit": True}
OURS = {  # label -> (sampler, overrides of its recommended settings)
    "ddim": ("ddim", {}), "dpmpp_2m": ("dpmpp_2m", {}), "dpmpp_2m logsnr": ("dpmpp_2m", {"spacing": "logsnr"}),
    "dpmpp_3m": ("dpmpp_3m", {}), "dpmpp_3m trailing": ("dpmpp_3m", {"spacing": "trailing"}),
    "unipc": ("unipc", {}), "unipc-3": ("unipc", {"solver_order": 3}),
    "unipc trailing": ("unipc", {"spacing": "trailing"}), "dpmpp_2m_sde": ("dpmpp_2m_sde", {}),
    "heun": ("heun", {}), "heun logsnr": ("heun", {"spacing": "logsnr", "karras_sigmas": False}),
    "euler karras": ("euler", {"karras_sigmas": True}), "euler logsnr": ("euler", {"spacing": "logsnr"}),
    # timesteps fitted on this oracle (diffusion_core/samplers/fit.py) from noise the scoring never sees
    "dpmpp_2m fitted": ("dpmpp_2m", FIT), "dpmpp_3m fitted": ("dpmpp_3m", FIT), "unipc fitted": ("unipc", FIT),
}
_FITS: dict = {}


def oracle(x, t):
    """eps = (x_t - alpha x0*) / sigma_vp with x0* = E[x0 | x_t] for the mixture, at sigma(t)."""
    x = np.asarray(x, dtype=np.float64)
    s = float(sigma_at(SCHEDULE, float(t)))
    a, sv = 1.0 / math.sqrt(1.0 + s * s), s / math.sqrt(1.0 + s * s)
    var = a * a * STD ** 2 + sv * sv                         # marginal variance of one component
    z = x[..., None] - a * MEANS
    logp = np.log(WEIGHTS) - 0.5 * z * z / var
    p = np.exp(logp - logp.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    x0 = (p * (MEANS + (a * STD ** 2 / var) * z)).sum(-1)    # Gaussian posterior mean per component
    return ((x - a * x0) / sv).astype(np.float32)


GRID = np.linspace(-2.0, 2.0, 8001)
_PHI = np.vectorize(lambda u: 0.5 * (1.0 + math.erf(u / math.sqrt(2.0))))
TRUE_CDF = sum(w * _PHI((GRID - m) / STD) for m, w in zip(MEANS, WEIGHTS))


def wasserstein_1(values):
    """W1 = integral |F_samples - F_true| dx on [-2, 2] (samples outside count at the ends)."""
    emp = np.searchsorted(np.sort(np.ravel(values)), GRID, side="right") / np.size(values)
    return float(np.trapz(np.abs(emp - TRUE_CDF), GRID))


def fitted(sampler, steps):
    """Timesteps fitted for (sampler, steps) on 2 x 1600 pixels of their own noise (seeds 10, 11)."""
    if (sampler, steps) not in _FITS:
        from diffusion_core.samplers.fit import fit_timesteps
        noise = [np.random.default_rng(s).standard_normal((1, 1, 40, 40), dtype=np.float32) for s in (10, 11)]
        _FITS[sampler, steps] = fit_timesteps(oracle, SCHEDULE, sampler=sampler, steps=steps, x_fit=noise[0],
                                              x_held_out=noise[1], teacher_steps=200, clip_x0=False)
    return _FITS[sampler, steps].timesteps


def ours(label, calls, x_T):
    sampler, options = OURS[label]
    steps = (calls + 1) // 2 if sampler == "heun" else calls
    if options is FIT:
        return sample(oracle, SCHEDULE, sampler=sampler, timesteps=fitted(sampler, steps), x_T=x_T, seed=1,
                      clip_x0=False)
    return sample(oracle, SCHEDULE, sampler=sampler, steps=steps, x_T=x_T, seed=1, clip_x0=False, **options)


def diffusers_configs():
    from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                           HeunDiscreteScheduler, UniPCMultistepScheduler)
    base = {"beta_schedule": "squaredcos_cap_v2"}
    return {
        "diffusers ddim trailing": (DDIMScheduler, {"timestep_spacing": "trailing", "clip_sample": False}),
        "diffusers dpm++2m": (DPMSolverMultistepScheduler, {}),
        "diffusers dpm++2m karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
        "diffusers dpm++3m": (DPMSolverMultistepScheduler, {"solver_order": 3}),
        "diffusers dpm++3m karras": (DPMSolverMultistepScheduler, {"solver_order": 3, "use_karras_sigmas": True}),
        # use_lu_lambdas: diffusers' own steps uniform in log-SNR, the counterpart of our logsnr spacing
        "diffusers dpm++2m lu": (DPMSolverMultistepScheduler, {"use_lu_lambdas": True}),
        "diffusers dpm++3m lu": (DPMSolverMultistepScheduler, {"solver_order": 3, "use_lu_lambdas": True}),
        "diffusers dpm++2m sde karras": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++",
                                                                        "use_karras_sigmas": True}),
        "diffusers unipc": (UniPCMultistepScheduler, {}),
        "diffusers unipc-3": (UniPCMultistepScheduler, {"solver_order": 3}),
        "diffusers unipc karras": (UniPCMultistepScheduler, {"use_karras_sigmas": True}),
        "diffusers unipc trailing": (UniPCMultistepScheduler, {"timestep_spacing": "trailing"}),
        "diffusers euler karras": (EulerDiscreteScheduler, {"use_karras_sigmas": True}),
        "diffusers heun karras": (HeunDiscreteScheduler, {"use_karras_sigmas": True}),
    }, base


def theirs(label, calls, x_T):
    import torch
    configs, base = diffusers_configs()
    cls, kw = configs[label]
    scheduler = cls(**base, **kw)
    steps = (calls + 1) // 2 if "heun" in label else calls
    scheduler.set_timesteps(steps)
    x = torch.from_numpy(x_T) * float(scheduler.init_noise_sigma)
    gen = torch.Generator().manual_seed(1)
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(x, t)
        eps = torch.from_numpy(oracle(inp.numpy(), float(t)))
        kwargs = {"generator": gen} if "sde" in label else {}
        x = scheduler.step(eps, t, x, **kwargs).prev_sample
    return x.numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pixels", type=int, default=20000)
    parser.add_argument("--calls", default="5,8,10,15,20,50")
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    calls = [int(c) for c in args.calls.split(",")]
    x_T = np.random.default_rng(0).standard_normal((args.pixels, 1, 1, 1), dtype=np.float32)
    rng = np.random.default_rng(2)
    exact = rng.normal(MEANS[rng.choice(4, args.pixels, p=WEIGHTS)], STD)
    table, start = {}, time.time()
    for label in OURS:
        table[label] = {c: wasserstein_1(ours(label, c, x_T)) for c in calls}
    failures = {}
    for label in diffusers_configs()[0]:
        row = {}
        for c in calls:
            try:
                row[c] = wasserstein_1(theirs(label, c, x_T))
            except Exception as error:  # a diffusers configuration that fails at this budget
                failures[f"{label} @ {c}"] = repr(error)
                row[c] = float("nan")
        table[label] = row
    floor = wasserstein_1(exact)
    best = {}
    for c in calls:
        o = min((v[c], k) for k, v in table.items() if not k.startswith("diffusers"))
        d = min((v[c], k) for k, v in table.items() if k.startswith("diffusers") and not math.isnan(v[c]))
        best[c] = {"ours": o, "diffusers": d, "ours_closer_by": 1.0 - o[0] / d[0]}
    RESULTS.mkdir(exist_ok=True)
    out = {"problem": {"means": MEANS.tolist(), "weights": WEIGHTS.tolist(), "std": STD, "schedule": "cosine",
                       "pixels": args.pixels}, "floor_exact_draws": floor, "w1": table, "best": best,
           "diffusers_failures": failures,
           "fitted_timesteps": {f"{k[0]} {k[1]}": v.timesteps.tolist() for k, v in _FITS.items()},
           "seconds": time.time() - start}
    (RESULTS / "closed_form.json").write_text(json.dumps(out, indent=1))
    print(f"W1 to the true mixture (floor of {args.pixels} exact draws: {floor:.4f})")
    print(f"{'':30s}" + "".join(f"{c:>9d}" for c in calls))
    for label, row in table.items():
        print(f"{label:30s}" + "".join(f"{row[c]:9.4f}" for c in calls))
    for c in calls:
        b = best[c]
        print(f"{c:3d} calls: best ours {b['ours'][1]} {b['ours'][0]:.4f}, best diffusers {b['diffusers'][1]} "
              f"{b['diffusers'][0]:.4f}: ours closer by {100 * b['ours_closer_by']:.0f}%")
    for what, why in failures.items():
        print(f"failed: {what}: {why}")
    plot(table, calls, floor)


def plot(table, calls, floor):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, row in table.items():
        ax.plot(calls, [row[c] for c in calls], "--" if label.startswith("diffusers") else "-", marker="o",
                label=label, markersize=3)
    ax.axhline(floor, color="k", lw=0.5, label="exact draws")
    ax.set(xscale="log", yscale="log", xlabel="model calls", ylabel="1-Wasserstein to the true mixture")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(RESULTS / "closed_form.png", dpi=120)


if __name__ == "__main__":
    main()
