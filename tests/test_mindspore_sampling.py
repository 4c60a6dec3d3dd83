"""Sampling through the core on MindSpore, against PyTorch, and checkpoints across the frameworks.

Sampler tolerance: one forward pass agrees to ~1e-6 between the frameworks; a sampler feeds each
output back in, so differences grow with the steps. Measured on these configs (12 steps, images
in [-1, 1]): at most 5e-5 (Heun; below 1e-6 for the others). The bound 1e-3 is 20x that and still
far below what a real discrepancy does (one wrong weight or coefficient moves images by >1e-1).
"""
from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore", reason="MindSpore backend tests need mindspore installed")
torch = pytest.importorskip("torch", reason="MindSpore/PyTorch parity tests need torch installed")

import backends.mindspore as bm  # noqa: E402
import backends.pytorch as bt  # noqa: E402
from backends import get_backend, load_model  # noqa: E402
from backends import build_network  # noqa: E402
from diffusion_core.checkpoint import save_checkpoint  # noqa: E402
from diffusion_core import DiffusionConfig, ModelConfig, UnetConfig  # noqa: E402
from diffusion_core.samplers import list_samplers, sample  # noqa: E402

SAMPLER_TOLERANCE = 1e-3
PLAIN = UnetConfig(image_size=8, dim=8, dim_mults=(1, 2), full_attn=(False, True),
                   resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
CLASSES = UnetConfig(image_size=8, dim=8, dim_mults=(1, 2), full_attn=(False, True),
                     resnet_block_groups=4, attn_heads=2, attn_dim_head=8, num_classes=5)
SELF_COND = UnetConfig(image_size=8, channels=3, dim=8, dim_mults=(1, 2), full_attn=(False, True),
                       resnet_block_groups=4, attn_heads=2, attn_dim_head=8, self_condition=True)


@pytest.fixture(scope="module")
def models():
    """(PyTorch model, MindSpore model in graph mode) per config, on the same weights.

    PyTorch runs on one thread here: on a shared two-core machine its default two OpenMP threads
    wait on each other for most of the time (this file took 120 s instead of 20 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    for name, cfg in (("plain", PLAIN), ("self_cond", SELF_COND), ("classes", CLASSES)):
        torch.manual_seed(3)
        reference = build_network("pytorch", cfg).eval()
        unet = bm.build_network(cfg)
        bm.load_state_from_numpy(unet, bt.state_to_numpy(reference))
        out[name] = (bt.TorchDenoiserModel(reference), bm.MindSporeDenoiserModel(unet, graph=True))
    yield out
    torch.set_num_threads(threads)


@pytest.mark.parametrize("sampler", list_samplers())
@pytest.mark.parametrize("which, prediction", [("plain", "eps"), ("self_cond", "v"), ("classes", "v")])
def test_same_seed_same_images_on_both_backends(models, sampler, which, prediction):
    torch_model, ms_model = models[which]
    cfg = torch_model.network.config
    schedule = DiffusionConfig(schedule="cosine").make_schedule()
    kwargs = dict(sampler=sampler, steps=12, shape=(2, cfg.channels, 8, 8), seed=5,
                  prediction_type=prediction, model_inputs=ModelConfig(network=cfg).inputs)
    if cfg.num_classes:  # labels and classifier-free guidance (one doubled forward per step)
        kwargs.update(class_labels=[1, 4], guidance_scale=3.0, guidance_rescale=0.5)
    want = sample(torch_model, schedule, ops=torch_model.ops, **kwargs)
    got = sample(ms_model, schedule, ops=ms_model.ops, **kwargs)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.abs(got - want).max() < SAMPLER_TOLERANCE, sampler


def test_thresholding_runs_through_mindspore_ops(models):
    torch_model, ms_model = models["plain"]
    schedule = DiffusionConfig().make_schedule()
    kwargs = dict(sampler="ddim", steps=6, shape=(2, 1, 8, 8), seed=2, threshold_ratio=0.9)
    want = sample(torch_model, schedule, ops=torch_model.ops, **kwargs)
    got = sample(ms_model, schedule, ops=ms_model.ops, **kwargs)
    assert np.abs(got - want).max() < SAMPLER_TOLERANCE


def test_registry_loads_a_canonical_checkpoint(tmp_path):
    torch.manual_seed(0)
    reference = build_network("pytorch", PLAIN).eval()
    folder = save_checkpoint(tmp_path / "ckpt", ModelConfig(network=PLAIN),
                             bt.state_to_numpy(reference))
    backend = get_backend("mindspore")
    assert (backend.name, backend.title, backend.requires) == ("mindspore", "MindSpore",
                                                              ("mindspore",))
    loaded = load_model("mindspore", folder)
    assert loaded.backend == "mindspore" and loaded.device == "cpu"
    images = loaded.sample(batch_size=2, steps=4, seed=1)
    want = load_model("pytorch", folder, device="cpu").sample(batch_size=2, steps=4, seed=1)
    assert np.abs(images - want).max() < SAMPLER_TOLERANCE
    with pytest.raises(ValueError, match="cannot switch"):
        bm.prepare("ascend")  # MindSpore fixed its device at its first operation
