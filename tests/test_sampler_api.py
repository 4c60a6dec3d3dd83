"""The public sampling surface: registry, errors a user can act on, callbacks, no hidden state."""
from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

from diffusers_reference import fixed_model
from diffusion_core import SAMPLERS, list_samplers, make_schedule, sample
from diffusion_core.samplers import make_options, noise_generators

SCHEDULE = make_schedule("linear")
SHAPE = (3, 1, 4, 4)
MODEL = fixed_model(SHAPE, "eps")


def test_registry_names():
    assert list_samplers() == ["ddpm", "ddim", "dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde", "unipc", "euler",
                              "euler_ancestral", "heun"]
    assert all(SAMPLERS[n].title for n in list_samplers())
    assert SAMPLERS["heun"].model_evaluations(10) == 19 and SAMPLERS["ddim"].model_evaluations(10) == 10


@pytest.mark.parametrize("kwargs,message", [
    ({"sampler": "plms"}, "choose one of ddpm, ddim, dpmpp_2m, dpmpp_3m, dpmpp_2m_sde, unipc, euler"),
    ({"steps": 1001}, "between 1 and the number of training timesteps T = 1000"),
    ({"steps": 0}, "between 1 and"),
    ({"eta": -0.1}, "eta must be between 0"),
    ({"eta": 0.5, "sampler": "euler"}, "do not apply to sampler 'euler'"),
    ({"karras_sigmas": True, "sampler": "ddim"}, "do not apply to sampler 'ddim'"),
    ({"spacing": "uniform"}, "leading, trailing, linspace"),
    ({"variance": "learned", "sampler": "ddpm"}, "fixed_small, fixed_large"),
    ({"guidance": 3.0}, "unknown sampler option"),
    ({"seed": -1}, "non-negative integer"),
    ({"shape": None}, "give shape="),
    ({"threshold_ratio": 1.5}, "threshold_ratio must be in"),
])
def test_bad_settings_raise_actionable_errors(kwargs, message):
    args = {"sampler": "ddim", "steps": 5, "shape": SHAPE, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        sample(MODEL, SCHEDULE, **args)


def test_zero_terminal_snr_refuses_eps_models():
    with pytest.raises(ValueError, match="v- or x0-prediction"):
        sample(MODEL, make_schedule("linear", zero_terminal_snr=True), steps=5, shape=SHAPE, seed=0)


def test_x_T_shape_mismatch():
    with pytest.raises(ValueError, match="disagrees"):
        sample(MODEL, SCHEDULE, steps=5, shape=(1, 1, 4, 4), x_T=np.zeros(SHAPE, np.float32))


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_seed_reproducible_and_stateless(sampler):
    a = sample(MODEL, SCHEDULE, sampler=sampler, steps=6, shape=SHAPE, seed=11)
    b = sample(MODEL, SCHEDULE, sampler=sampler, steps=6, shape=SHAPE, seed=11)
    c = sample(MODEL, SCHEDULE, sampler=sampler, steps=6, shape=SHAPE, seed=12)
    assert a.dtype == np.float32 and a.shape == SHAPE
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    # the seed draws x_T first: giving that x_T explicitly changes nothing
    x_T = noise_generators(11)[0].standard_normal(SHAPE, dtype=np.float32)
    np.testing.assert_array_equal(a, sample(MODEL, SCHEDULE, sampler=sampler, steps=6, x_T=x_T, seed=11))


def test_concurrent_calls_match_solo_runs():
    solo = {s: sample(MODEL, SCHEDULE, sampler=s, steps=8, shape=SHAPE, seed=5) for s in SAMPLERS}
    results, errors = {}, []

    def run(name, i):
        try:
            results[(name, i)] = sample(MODEL, SCHEDULE, sampler=name, steps=8, shape=SHAPE, seed=5)
        except Exception as e:  # pragma: no cover - surfaced below
            errors.append(e)
    threads = [threading.Thread(target=run, args=(s, i)) for s in SAMPLERS for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for (name, _), out in results.items():
        np.testing.assert_array_equal(out, solo[name])


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_callback_sees_every_step(sampler):
    seen = []
    out = sample(MODEL, SCHEDULE, sampler=sampler, steps=7, shape=SHAPE, seed=0, callback=seen.append)
    assert [s.index for s in seen] == list(range(7)) and all(s.total == 7 for s in seen)
    assert all(s.x.shape == SHAPE and s.x0.shape == SHAPE for s in seen)
    ts = [s.t for s in seen]
    assert ts == sorted(ts, reverse=True) and ts[0] == pytest.approx(999)
    np.testing.assert_allclose(seen[-1].x, out, atol=1e-6)
    assert np.abs(seen[-1].x0).max() <= 1.0  # clipped by default


def test_model_evaluations_and_self_condition():
    calls = []

    def model(x, t, x_self_cond=None):
        calls.append((t, None if x_self_cond is None else np.array(x_self_cond)))
        return MODEL(x, t)
    sample(model, SCHEDULE, sampler="heun", steps=5, shape=SHAPE, seed=0, self_condition=True)
    assert len(calls) == SAMPLERS["heun"].model_evaluations(5)
    assert np.all(calls[0][1] == 0.0)               # first call: zeros
    assert np.abs(calls[1][1]).max() > 0            # later: the previous x0 estimate
    calls.clear()
    sample(model, SCHEDULE, sampler="ddim", steps=4, shape=SHAPE, seed=0)
    assert len(calls) == 4 and all(c[1] is None for c in calls)


def test_option_helpers():
    opts = make_options("ddim", eta=0.5)
    assert opts.eta == 0.5 and opts.changed() == {"eta"}
    assert make_options("euler", karras_sigmas=True).karras_sigmas


def test_core_imports_without_frameworks():
    code = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'mindspore', 'onnxruntime', 'tensorflow', 'jax'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import numpy as np
import diffusion_core
from diffusion_core import make_schedule, sample, list_samplers
import importlib, pkgutil
for info in pkgutil.walk_packages(diffusion_core.__path__, 'diffusion_core.'):
    importlib.import_module(info.name)  # every module of the core, the training loop included
s = make_schedule('cosine')
out = sample(lambda x, t: 0.1 * x, s, sampler='dpmpp_2m', steps=5, shape=(2, 1, 4, 4), seed=0)
assert out.shape == (2, 1, 4, 4)
assert not any(m.split('.')[0] in ('torch', 'mindspore', 'onnxruntime') for m in sys.modules)
print('ok')
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_solver_order_is_checked():
    with pytest.raises(ValueError, match="solver_order must be 1, 2 or 3"):
        sample(lambda x, t: x, make_schedule("linear"), sampler="unipc", steps=5, shape=(1, 1, 2, 2),
               solver_order=4)
    with pytest.raises(ValueError, match="do not apply to sampler 'ddim'"):
        sample(lambda x, t: x, make_schedule("linear"), sampler="ddim", steps=5, shape=(1, 1, 2, 2),
               solver_order=2)


def test_recommended_settings_apply_unless_overridden():
    seen = []
    model = fixed_model((1, 1, 2, 2), "eps")
    sch = make_schedule("cosine")

    def run(**kw):
        seen.clear()
        sample(lambda x, t: (seen.append(t), model(x, t))[1], sch, shape=(1, 1, 2, 2), seed=0, **kw)
        return list(seen)
    # Heun: Karras sigmas by default, so its first step is not the capped sigma ~2e4 of t = 999
    heun = run(sampler="heun", steps=5)
    assert heun == run(sampler="heun", steps=5, karras_sigmas=True) != run(sampler="heun", steps=5,
                                                                             karras_sigmas=False)
    # UniPC: uniform log-SNR steps and its default step count
    assert len(run(sampler="unipc")) == SAMPLERS["unipc"].default_steps == 20
    assert run(sampler="unipc", steps=6) == run(sampler="unipc", steps=6, spacing="logsnr")
    assert run(sampler="unipc", steps=6, spacing="trailing") != run(sampler="unipc", steps=6)
    # an explicit SamplerOptions is taken as it is
    assert run(sampler="heun", steps=5, options=make_options("heun")) == run(sampler="heun", steps=5,
                                                                              karras_sigmas=False)

