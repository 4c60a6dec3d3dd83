"""The bf16 fast path: opt-in, close to float32 on the shipped model, refused where there is none."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from backends import BackendUnavailable, backend_status, load_model  # noqa: E402

MODEL = Path(__file__).resolve().parent.parent / "models" / "default"


def levels(images):
    return np.round((np.clip(images, -1, 1) + 1) * 127.5)


def test_bf16_draws_nearly_the_float32_images():
    fp32 = load_model("pytorch", MODEL, device="cpu")
    bf16 = load_model("pytorch", MODEL, device="cpu", precision="bf16")
    a = fp32.sample(batch_size=4, sampler="dpmpp_2m", steps=10, seed=3)
    b = bf16.sample(batch_size=4, sampler="dpmpp_2m", steps=10, seed=3)
    assert b.dtype == a.dtype == np.float32
    moved = np.abs(levels(a) - levels(b))
    assert moved.max() > 0, "bf16 gave bit-identical images: autocast did not take effect"
    # bench/bf16.py measured a mean of well under one 8-bit level on 256 images
    assert moved.mean() < 1.5 and np.mean(moved > 4) < 0.05


def test_fp32_stays_the_default_and_exact():
    a = load_model("pytorch", MODEL, device="cpu").sample(batch_size=2, steps=5, seed=1)
    b = load_model("pytorch", MODEL, device="cpu", precision="fp32").sample(batch_size=2, steps=5, seed=1)
    np.testing.assert_array_equal(a, b)


def test_a_bad_precision_and_a_backend_without_bf16_get_a_sentence():
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, got 'fp16'"):
        load_model("pytorch", MODEL, precision="fp16")
    if not backend_status("onnxruntime").available:
        pytest.skip("onnxruntime is not installed")
    with pytest.raises(BackendUnavailable, match="ONNX Runtime cannot sample in bf16: its CPU provider has no bf16"):
        load_model("onnxruntime", MODEL, precision="bf16")


def test_compile_draws_the_eager_images_and_other_backends_refuse_it():
    eager = load_model("pytorch", MODEL, device="cpu")
    try:
        compiled = load_model("pytorch", MODEL, device="cpu", compile=True)
        b = compiled.sample(batch_size=2, sampler="dpmpp_2m", steps=3, seed=2)
    except Exception as error:  # torch.compile's inductor needs a working C++ compiler
        if "compiler" in str(error).lower() or "cpp" in str(error).lower():
            pytest.skip(f"torch.compile cannot build here: {str(error)[:120]}")
        raise
    a = eager.sample(batch_size=2, sampler="dpmpp_2m", steps=3, seed=2)
    assert np.abs(a - b).max() < 1e-4        # fused kernels round differently, the same images
    if backend_status("onnxruntime").available:
        with pytest.raises(BackendUnavailable, match="ONNX Runtime has no compiled path"):
            load_model("onnxruntime", MODEL, compile=True)
