"""Train a tiny model, push it, pull it into an empty cache, and get the same images back."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch", reason="the round trip trains and samples with the PyTorch backend")

from backends import load_model  # noqa: E402
from diffusion_core.checkpoint import load_checkpoint  # noqa: E402
from diffusion_core.hub import pull, push  # noqa: E402


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cmd = [sys.executable, "-m", "backends.pytorch.train", "--data", "digits", "--out", str(out),
           "--steps", "12", "--batch-size", "16", "--dim", "8", "--dim-mults", "1,2", "--groups", "4",
           "--sample-every", "0", "--checkpoint-every", "0", "--log-every", "6", "--num-threads", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return out / "model"


def test_push_pull_sample_round_trip(trained_model, hub_server, tmp_path):
    local = load_model("pytorch", trained_model, device="cpu")
    before = local.sample(batch_size=3, sampler="dpmpp_2m", steps=8, seed=21)
    url = push(trained_model, "tester/tiny-digits", token=hub_server.token, endpoint=hub_server.endpoint,
               commit_message="tiny digits model")
    assert url.startswith(hub_server.endpoint)
    folder = pull("tester/tiny-digits", cache_dir=tmp_path / "empty-cache", endpoint=hub_server.endpoint,
                  token=hub_server.token)
    assert folder != trained_model and (folder / "model.safetensors").is_file()
    pulled = load_checkpoint(folder)
    original = load_checkpoint(trained_model).config
    assert pulled.config == original and pulled.config.notes == original.notes
    assert "digits" in pulled.config.notes["dataset"]
    after = load_model("pytorch", pulled, device="cpu").sample(batch_size=3, sampler="dpmpp_2m", steps=8,
                                                                seed=21)
    np.testing.assert_array_equal(before, after)
    assert np.abs(before).max() > 0.05  # real images, not an all-zero output
