"""The model seam: a second architecture (tests/plain_unet: the Unet without attention) is one
registry entry and a network per framework, and then trains, saves, loads on all three backends,
exports to ONNX and samples the same images everywhere, with no other file knowing it exists."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the test architecture trains with PyTorch")

import plain_unet  # noqa: E402  (registers the architecture)
from backends import backend_status, build_network, list_backends, load_model  # noqa: E402
from backends.pytorch import distributed, state_to_numpy  # noqa: E402
from backends.pytorch.engine import TorchEngine  # noqa: E402
from diffusion_core import DiffusionConfig, ModelConfig, list_samplers  # noqa: E402
from diffusion_core.architectures import ARCHITECTURES, register  # noqa: E402
from diffusion_core.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from diffusion_core.data import load_dataset  # noqa: E402
from diffusion_core.training.config import TrainConfig  # noqa: E402
from diffusion_core.training.loop import TrainingLoop  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CFG = plain_unet.PlainUnetConfig()
MODEL = ModelConfig(network=CFG, diffusion=DiffusionConfig(schedule="cosine", prediction_type="v"))
# Two frameworks' float32 sums in different orders, fed back through the sampler's steps: the
# tolerance of the other cross-backend sampling tests (test_mindspore_sampling, test_onnx).
SAMPLER_TOLERANCE = 1e-3


def train_config(out: Path, steps: int) -> TrainConfig:
    return TrainConfig(data="digits", image_size=8, out=str(out), model=MODEL, steps=steps, batch_size=16,
                       lr=1e-3, log_every=1, sample_every=0, checkpoint_every=0, sample_steps=3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """30 PyTorch steps through the shared loop, the export, and model.onnx from the registry's
    PyTorch network."""
    from backends.onnx.export import export_checkpoint
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("plain") / "run"
    config, dataset = train_config(out, 30), load_dataset("digits", 8)
    loop = TrainingLoop(config, dataset, TorchEngine(config, dataset, distributed.Dist(), torch.device("cpu")),
                        progress=None)
    loop.run()
    assert export_checkpoint(out / "model").max_abs_diff < 1e-4
    return out


def test_the_entry_and_both_networks_agree(monkeypatch):
    from backends.pytorch.blocks import Upsample
    # forward_flops counts nearest x2 + a 3x3 conv; the block runs the cheaper equal transposed conv
    monkeypatch.setattr(Upsample, "forward", Upsample.forward_textbook)
    shapes = ARCHITECTURES["plain_unet"].parameter_shapes(CFG)
    network = build_network("pytorch", CFG)
    assert {n: tuple(p.shape) for n, p in network.named_parameters()} == shapes
    assert not any("attn" in name for name in shapes)
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        network(torch.zeros(2, 1, 8, 8), torch.zeros(2))
    assert counter.get_total_flops() == ARCHITECTURES["plain_unet"].forward_flops(CFG, 2)
    pytest.importorskip("mindspore", reason="the MindSpore network needs mindspore")
    import backends.mindspore as bm
    from backends.mindspore.names import canonical_to_mindspore
    assert list(canonical_to_mindspore(bm.build_network(CFG))) == list(shapes)


def test_trained_checkpoint_names_its_architecture(trained):
    checkpoint = load_checkpoint(trained / "model")
    assert checkpoint.config.architecture.name == "plain_unet" and checkpoint.onnx_path is not None
    text = (trained / "model" / "config.json").read_text()
    assert '"architecture": "plain_unet"' in text and '"format_version": 2' in text
    assert "Unet without attention (a test architecture)" in (trained / "model" / "README.md").read_text()
    installed = {s.name for s in list_backends() if s.available}
    assert installed <= {s.name for s in list_backends(trained / "model") if s.available}


@pytest.mark.parametrize("sampler", list_samplers())
def test_same_images_on_every_backend(trained, sampler):
    folder = trained / "model"
    want = load_model("pytorch", folder, device="cpu").sample(batch_size=3, sampler=sampler, steps=6, seed=2)
    assert np.isfinite(want).all() and want.shape == (3, 1, 8, 8)
    for backend in ("onnxruntime", "mindspore"):
        if not backend_status(backend).available:
            continue
        got = load_model(backend, folder).sample(batch_size=3, sampler=sampler, steps=6, seed=2)
        assert np.abs(got - want).max() < SAMPLER_TOLERANCE, (backend, sampler)


def test_mindspore_trains_it_through_the_same_loop(tmp_path):
    pytest.importorskip("mindspore", reason="the MindSpore trainer needs mindspore")
    from backends.mindspore.engine import MindSporeEngine
    config, dataset = train_config(tmp_path / "ms", 3), load_dataset("digits", 8)
    loop = TrainingLoop(config, dataset, MindSporeEngine(config, dataset), progress=None)
    loop.run()
    assert np.isfinite(loop.last_loss)
    images = load_model("pytorch", tmp_path / "ms" / "model", device="cpu").sample(batch_size=2, steps=3, seed=0)
    assert np.isfinite(images).all()


def test_a_backend_without_the_network_says_so(tmp_path):
    class TorchOnlyConfig(plain_unet.PlainUnetConfig):
        pass

    class TorchOnly(plain_unet.PlainUnet):
        name = "plain_unet_torch_only"
        config_class = TorchOnlyConfig
        networks = {"pytorch": "plain_unet.torch_network:PlainUnet"}
    ARCHITECTURES.get(TorchOnly.name) or register(TorchOnly())
    config = ModelConfig(network=TorchOnlyConfig())
    weights = state_to_numpy(build_network("pytorch", config.network))
    folder = save_checkpoint(tmp_path / "c", config, weights)
    status = backend_status("mindspore", load_checkpoint(folder))
    if backend_status("mindspore").available:
        assert not status.available
        assert status.reason == ("the plain_unet_torch_only architecture has no mindspore network (it "
                                 "is implemented for pytorch); pick another backend")


def test_only_the_declaration_names_the_self_conditioning_input():
    """One declaration per concept: the input's name appears where it is declared, and in no
    network, sampler, adapter, exporter, runtime, trainer or app file (they find it by role)."""
    from diffusion_core.architectures.inputs import self_condition_input
    name = self_condition_input(1, 8, 8).name
    found = sorted(str(p.relative_to(REPO)) for folder in ("diffusion_core", "backends", "webapp", "bench",
                                                            "scripts")
                   for p in (REPO / folder).rglob("*.py") if re.search(rf"\b{name}\b", p.read_text()))
    found += ["app.py"] if re.search(rf"\b{name}\b", (REPO / "app.py").read_text()) else []
    assert found == ["diffusion_core/architectures/inputs.py"]
