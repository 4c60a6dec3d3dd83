"""The learning-rate and EMA schedules every trainer shares (diffusion_core/training/rules.py)."""
from __future__ import annotations

import math

import pytest

from diffusion_core.parsing import ConfigError
from diffusion_core.training import ema_decay_at, learning_rate_at
from diffusion_core.training.config import TrainConfig


def _config(**kw) -> TrainConfig:
    return TrainConfig(lr=1e-3, **kw)


def test_constant_after_warm_up():
    cfg = _config(warmup_steps=4)
    assert [learning_rate_at(s, cfg) for s in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert learning_rate_at(10_000, _config()) == 1e-3


def test_linear_decay_reaches_zero_at_its_end():
    cfg = _config(warmup_steps=10, lr_decay="linear", lr_decay_steps=100)
    assert learning_rate_at(9, cfg) == pytest.approx(1e-3)      # the warm-up's last step
    assert learning_rate_at(10, cfg) == pytest.approx(1e-3)     # the decay's first step: no jump
    assert learning_rate_at(60, cfg) == pytest.approx(5e-4)     # halfway
    assert learning_rate_at(109, cfg) == pytest.approx(1e-5)    # the last step a run of 110 takes
    assert learning_rate_at(110, cfg) == 0.0 and learning_rate_at(500, cfg) == 0.0


def test_cosine_decay_is_half_a_cosine():
    cfg = _config(lr_decay="cosine", lr_decay_steps=100)
    assert learning_rate_at(0, cfg) == pytest.approx(1e-3)
    assert learning_rate_at(25, cfg) == pytest.approx(1e-3 * (1 + math.cos(math.pi / 4)) / 2)
    assert learning_rate_at(50, cfg) == pytest.approx(5e-4)
    assert learning_rate_at(100, cfg) == pytest.approx(0.0, abs=1e-18)
    rates = [learning_rate_at(s, cfg) for s in range(101)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))        # never rises


@pytest.mark.parametrize("kw, message", [
    (dict(lr_decay="step"), "lr_decay must be one of none, linear, cosine"),
    (dict(lr_decay="cosine"), "needs --lr-decay-steps > 0"),
])
def test_bad_decay_settings_name_the_fix(kw, message):
    with pytest.raises(ConfigError, match=message):
        _config(**kw)


def test_old_run_configs_read_as_constant_rate():
    # train_config.json of runs written before lr_decay existed: the fields take their defaults
    text = TrainConfig(lr=3e-4).to_json().replace('"lr_decay": "none",', "").replace('"lr_decay_steps": 0,', "")
    assert "lr_decay" not in text
    cfg = TrainConfig.from_json(text)
    assert cfg.lr_decay == "none" and learning_rate_at(5_000, cfg) == 3e-4


def test_ema_warm_up():
    assert ema_decay_at(0, 0.999, 100) == pytest.approx(0.1)
    assert ema_decay_at(99, 0.999, 100) == pytest.approx(100 / 109)
    assert ema_decay_at(100, 0.999, 100) == 0.999
