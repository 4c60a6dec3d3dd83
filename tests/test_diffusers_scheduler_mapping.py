"""scheduler_config.json -> DiffusionConfig: the forward process diffusers' scheduler builds is the
one our schedule builds, every supported field is read, and every other field is named in an error.

diffusers computes betas and alphas_cumprod in float32 and we in float64, so they are compared
to 1e-5 relative (float32 cumprod over 1000 steps drifts ~1e-6 relative)."""
from __future__ import annotations

import json

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers", reason="diffusers' schedulers are the reference")

from diffusion_core.config import DiffusionConfig  # noqa: E402
from diffusion_core.convert.diffusers import diffusion_from_scheduler, scheduler_from_diffusion  # noqa: E402
from diffusion_core.parsing import ConfigError  # noqa: E402

def saved(scheduler) -> dict:
    """The scheduler_config.json save_pretrained writes (with its _class_name)."""
    return json.loads(scheduler.to_json_string())


CASES = [
    dict(),                                                                   # DDPMScheduler's defaults
    dict(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction"),
    dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000),
    dict(beta_schedule="linear", num_train_timesteps=500, beta_start=2e-4, beta_end=0.04),
    dict(beta_schedule="scaled_linear", num_train_timesteps=250),
    dict(beta_schedule="sigmoid", num_train_timesteps=300),
    dict(trained_betas=np.linspace(1e-4, 0.03, 200).tolist(), num_train_timesteps=200, prediction_type="sample"),
    dict(beta_schedule="squaredcos_cap_v2", rescale_betas_zero_snr=True, prediction_type="v_prediction"),
]


@pytest.mark.parametrize("kwargs", CASES, ids=lambda kw: ",".join(f"{k}" for k in kw) or "defaults")
def test_our_schedule_is_diffusers_schedule(kwargs):
    scheduler = diffusers.DDPMScheduler(**kwargs)
    diffusion, notes = diffusion_from_scheduler(saved(scheduler))
    ours = diffusion.make_schedule()
    theirs = scheduler.alphas_cumprod.double().numpy()
    assert ours.num_train_timesteps == len(theirs)
    np.testing.assert_allclose(ours.alphas_cumprod, theirs, rtol=1e-5, atol=1e-7)
    expected = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}[scheduler.config.prediction_type]
    assert diffusion.prediction_type == expected and notes["scheduler"] == "DDPMScheduler"
    assert notes["scheduler_sampling_settings"]["timestep_spacing"] == "leading"   # kept, not dropped
    # and back: the exported DDPMScheduler config builds the same process
    again = diffusers.DDPMScheduler.from_config(scheduler_from_diffusion(diffusion))
    np.testing.assert_allclose(again.alphas_cumprod.double().numpy(), theirs, rtol=1e-5, atol=1e-7)


def test_clip_variance_and_other_schedulers_are_read():
    diffusion, _ = diffusion_from_scheduler(saved(diffusers.DDPMScheduler(clip_sample=False, variance_type="fixed_large")))
    assert (diffusion.clip_x0, diffusion.variance) == (False, "fixed_large")
    assert diffusion.sampler_defaults(frozenset({"clip_x0", "variance"})) == {"clip_x0": False, "variance": "fixed_large"}
    assert diffusion.sampler_defaults(frozenset({"clip_x0"})) == {"clip_x0": False}   # DDIM reads no variance
    dpm, notes = diffusion_from_scheduler(saved(diffusers.DPMSolverMultistepScheduler()))
    assert dpm.clip_x0 is False and notes["scheduler_sampling_settings"]["solver_order"] == 2
    assert diffusion_from_scheduler(None)[0] == DiffusionConfig()   # no file: DDPMScheduler's defaults


@pytest.mark.parametrize("change, words", [
    ({"variance_type": "learned_range"}, "variance_type 'learned_range' is learned by the model"),
    ({"beta_schedule": "exp"}, "beta_schedule 'exp' is not supported"),
    ({"clip_sample_range": 2.0}, "clip_sample_range 2.0 is not 1"),
    ({"prediction_type": "flow"}, "prediction_type 'flow' is not one of"),
    ({"karras_rho": 7.0}, r"field\(s\) \['karras_rho'\] that this toolkit does not read"),
    ({"_class_name": "ScoreSdeVeScheduler"}, "describes a ScoreSdeVeScheduler"),
    ({"use_flow_sigmas": True}, "flow-matching sigmas"),
])
def test_what_cannot_be_read_is_named(change, words):
    with pytest.raises(ConfigError, match=words):
        diffusion_from_scheduler({**saved(diffusers.DDPMScheduler()), **change})
