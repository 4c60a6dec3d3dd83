"""`diffusion-toolkit fit-timesteps`: fit a sampler's timesteps on a model and store them with it.

    diffusion-toolkit fit-timesteps models/default --sampler dpmpp_3m --steps 5,8,10

For each step count, samplers/fit.py searches the timesteps that bring the sampler closest to an
accurate solve of the model's ODE from the same noise (unconditional: the null class where the
model has one), prints the error before and after on noise the search did not see, and, with
--write, stores them in the folder's config.json (atomically) under "fitted_timesteps": from then
on `spacing="optimized"` uses them, and so does the sampler's recommended setting at that count.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np


def parser() -> argparse.ArgumentParser:
    from .samplers.fit import FITTABLE
    p = argparse.ArgumentParser(prog="diffusion-toolkit fit-timesteps", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="checkpoint folder")
    p.add_argument("--backend", default="pytorch", help="the backend that runs the model calls")
    p.add_argument("--sampler", default="dpmpp_3m", choices=FITTABLE, help="the sampler to fit for")
    p.add_argument("--steps", default="5,8,10", help="comma-separated step counts (default: 5,8,10)")
    p.add_argument("--batch", type=int, default=32, help="starting noises scored per run (default: 32)")
    p.add_argument("--teacher-steps", type=int, default=100,
                   help="DPM-Solver++(3M) log-SNR steps of the reference solve (default: 100)")
    p.add_argument("--max-runs", type=int, default=150, help="sampler runs per fit at most (default: 150)")
    p.add_argument("--seed", type=int, default=0, help="seeds the fit noise; seed + 1 the held-out noise")
    p.add_argument("--write", action="store_true", help="store the fits in the folder's config.json")
    return p


def main(argv: list[str]) -> int:
    from .checkpoint import CONFIG_FILE, load_checkpoint
    from .files import write_atomically
    from .paths import toolkit_backends
    from .samplers.fit import fit_timesteps
    args = parser().parse_args(argv)
    try:
        steps = [int(s) for s in args.steps.split(",") if s.strip()]
        if args.write:
            load_checkpoint(args.model)   # --write needs a toolkit checkpoint, not a diffusers folder
        model = toolkit_backends().load_model(args.backend, args.model)
    except (ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    cfg = model.config
    shape = (args.batch, *cfg.sample_shape)
    x_fit = np.random.default_rng(args.seed).standard_normal(shape, dtype=np.float32)
    x_held = np.random.default_rng(args.seed + 1).standard_normal(shape, dtype=np.float32)
    table = {name: dict(per) for name, per in cfg.fitted_timesteps.items()}
    for n in steps:
        try:
            fit = fit_timesteps(model.model, cfg.diffusion.make_schedule(), sampler=args.sampler, steps=n,
                                x_fit=x_fit, x_held_out=x_held, teacher_steps=args.teacher_steps,
                                max_evaluations=args.max_runs, ops=model.ops,
                                prediction_type=cfg.diffusion.prediction_type, model_inputs=cfg.inputs,
                                progress=lambda line: print("  " + line, flush=True))
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(fit.summary(), flush=True)
        table.setdefault(args.sampler, {})[n] = tuple(round(float(t), 4) for t in fit.timesteps)
    if args.write:   # the folder's own config (a toolkit checkpoint: checked when it was loaded)
        config = replace(load_checkpoint(args.model).config, fitted_timesteps=table)
        path = Path(args.model) / CONFIG_FILE
        write_atomically(path, config.to_json().encode())
        print(f"wrote the fitted timesteps into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
