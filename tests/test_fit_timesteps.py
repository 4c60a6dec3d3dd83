"""Timesteps fitted on a model (samplers/fit.py): the fit helps, is stored, and is what gets used."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from diffusion_core.config import ConfigError, ModelConfig
from diffusion_core.paths import default_model_dir
from diffusion_core.samplers import sample
from diffusion_core.samplers.fit import fit_timesteps
from diffusion_core.schedules import make_schedule
from diffusion_core.timesteps import sigma_at, spaced_timesteps

SCHEDULE = make_schedule("cosine")
MEANS, WEIGHTS, STD = np.array([-0.8, -0.2, 0.5, 0.9]), np.array([0.3, 0.2, 0.3, 0.2]), 0.04


def mixture_eps_model(x, t):
    """The optimal eps-prediction when every pixel is drawn from a mixture of narrow Gaussians."""
    x = np.asarray(x, dtype=np.float64)
    s = float(sigma_at(SCHEDULE, float(t)))
    a, sv = 1.0 / math.sqrt(1.0 + s * s), s / math.sqrt(1.0 + s * s)
    var = a * a * STD ** 2 + sv * sv
    z = x[..., None] - a * MEANS
    logp = np.log(WEIGHTS) - 0.5 * z * z / var
    p = np.exp(logp - logp.max(-1, keepdims=True))
    x0 = ((p / p.sum(-1, keepdims=True)) * (MEANS + (a * STD ** 2 / var) * z)).sum(-1)
    return ((x - a * x0) / sv).astype(np.float32)


def _noise(seed, shape=(1, 1, 30, 30)):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def fit5():
    return fit_timesteps(mixture_eps_model, SCHEDULE, sampler="dpmpp_2m", steps=5, x_fit=_noise(0),
                         x_held_out=_noise(1), teacher_steps=100, clip_x0=False)


def test_the_fit_lowers_the_error_on_noise_it_never_saw(fit5):
    start, fitted = fit5.held_out_error
    # measured 0.24 -> 0.08 at 5 calls (3x); half of that still says the search found something
    assert fitted < start / 1.5, fit5.summary()
    assert fit5.fit_error[1] <= fit5.fit_error[0]


def test_fitted_timesteps_are_a_valid_descent_from_the_logsnr_start(fit5):
    ts = fit5.timesteps
    assert len(ts) == 5 and np.all(np.diff(ts) < 0) and ts[-1] >= 0
    assert ts[0] == spaced_timesteps("logsnr", 1000, 5, schedule=SCHEDULE, fractional=True)[0]


def test_the_fit_brings_the_pixel_distribution_closer_to_the_truth(fit5):
    x = _noise(5, (1, 1, 100, 100))
    exact = np.sort(np.random.default_rng(9).choice(MEANS, size=x.size, p=WEIGHTS)
                    + STD * np.random.default_rng(10).standard_normal(x.size))
    def w1(values):   # 1-Wasserstein between equal-size samples: mean gap of the sorted values
        return float(np.mean(np.abs(np.sort(values.ravel()) - exact)))
    logsnr = sample(mixture_eps_model, SCHEDULE, sampler="dpmpp_2m", steps=5, x_T=x, clip_x0=False)
    fitted = sample(mixture_eps_model, SCHEDULE, sampler="dpmpp_2m", timesteps=fit5.timesteps, x_T=x,
                    clip_x0=False)
    assert w1(fitted) < 0.6 * w1(logsnr)


def test_optimized_spacing_reads_the_table_and_is_recommended_where_it_exists(fit5):
    x, table = _noise(3), {"dpmpp_2m": {5: list(fit5.timesteps)}}
    given = sample(mixture_eps_model, SCHEDULE, sampler="dpmpp_2m", timesteps=fit5.timesteps, x_T=x)
    named = sample(mixture_eps_model, SCHEDULE, sampler="dpmpp_2m", steps=5, spacing="optimized",
                   fitted_timesteps=table, x_T=x)
    recommended = sample(mixture_eps_model, SCHEDULE, sampler="dpmpp_2m", steps=5,
                         fitted_timesteps=table, x_T=x)
    chosen = sample(mixture_eps_model, SCHEDULE, sampler="dpmpp_2m", steps=5, spacing="logsnr",
                    fitted_timesteps=table, x_T=x)
    logsnr = sample(mixture_eps_model, SCHEDULE, sampler="dpmpp_2m", steps=5, x_T=x)
    np.testing.assert_array_equal(given, named)
    np.testing.assert_array_equal(given, recommended)
    np.testing.assert_array_equal(chosen, logsnr)        # a chosen spacing is never overridden
    assert np.abs(given - logsnr).max() > 0.05
    other = sample(mixture_eps_model, SCHEDULE, sampler="dpmpp_2m", steps=6, fitted_timesteps=table, x_T=x)
    np.testing.assert_array_equal(other, sample(mixture_eps_model, SCHEDULE, sampler="dpmpp_2m",
                                                steps=6, x_T=x))


@pytest.mark.parametrize("kwargs,message", [
    ({"steps": 6, "spacing": "optimized", "fitted_timesteps": {"dpmpp_2m": {5: [990, 500, 100, 10, 0]}}},
     "no timesteps fitted for dpmpp_2m at 6 steps (it has dpmpp_2m at [5])"),
    ({"timesteps": [10, 500, 0]}, "strictly descending"),
    ({"timesteps": [1200, 500, 0]}, "must lie in [0, 999]"),
    ({"timesteps": [900, 500, 0], "karras_sigmas": True}, "cannot be combined"),
    ({"steps": 4, "timesteps": [900, 500, 0]}, "steps=4 disagrees with the 3 timesteps"),
    ({"steps": 3, "fitted_timesteps": {"dpmpp_2m": {3: [900, 500]}}}, "holds 2 timesteps, not 3"),
])
def test_bad_timesteps_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError) as error:
        sample(mixture_eps_model, SCHEDULE, sampler="dpmpp_2m", x_T=_noise(0), **kwargs)
    assert message in str(error.value)


def test_stochastic_and_integer_samplers_are_not_fitted():
    with pytest.raises(ValueError, match="not 'dpmpp_2m_sde'"):
        fit_timesteps(mixture_eps_model, SCHEDULE, sampler="dpmpp_2m_sde", steps=5, x_fit=_noise(0),
                      x_held_out=_noise(1))


def test_config_json_keeps_the_table_and_rejects_a_bad_one():
    data = json.loads((default_model_dir() / "config.json").read_text())
    data["fitted_timesteps"] = {"unipc": {"3": [994.5, 400.0, 0.0]}}
    config = ModelConfig.from_dict(data)
    assert config.fitted_timesteps == {"unipc": {3: (994.5, 400.0, 0.0)}}
    assert ModelConfig.from_json(config.to_json()).fitted_timesteps == config.fitted_timesteps
    data["fitted_timesteps"] = {"unipc": {"3": [0.0, 400.0, 994.5]}}
    with pytest.raises(ConfigError, match="strictly descending"):
        ModelConfig.from_dict(data)


def test_the_command_fits_and_writes_the_folder_that_then_samples_with_them(tmp_path, capsys):
    from backends import load_model
    from diffusion_core.cli import main
    folder = shutil.copytree(default_model_dir(), tmp_path / "model")
    weights = (folder / "model.safetensors").read_bytes()
    assert main(["fit-timesteps", str(folder), "--sampler", "unipc", "--steps", "4", "--batch", "2",
                 "--teacher-steps", "12", "--max-runs", "6", "--write"]) == 0
    out = capsys.readouterr().out
    assert "unipc 4 steps: RMS error to the teacher" in out and "wrote the fitted timesteps" in out
    assert (folder / "model.safetensors").read_bytes() == weights
    model = load_model("pytorch", folder)
    fitted = model.config.fitted_timesteps["unipc"][4]
    a = model.sample(2, sampler="unipc", steps=4, seed=0)
    b = model.sample(2, sampler="unipc", timesteps=fitted, seed=0)
    np.testing.assert_array_equal(a, b)
