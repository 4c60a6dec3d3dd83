"""diffusers UNet2DModel checkpoints, built and saved by diffusers, loaded through the toolkit.

Forward tolerance 1e-4 (the issue's). Measured against diffusers' own forward: PyTorch 0 (it is
diffusers' module); MindSpore 2.0e-6 / 1.8e-6 / 3.6e-6 and ONNX Runtime 1.7e-6 / 1.7e-6 / 3.0e-6
for small64 / class / cifar10 (outputs up to 1.6 / 1.2 / 2.4).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from diffusers_models import CONFIGS, build, diffusers, save, torch

from backends import backend_status, load_model  # noqa: E402
from backends.onnx.export import export_checkpoint  # noqa: E402
from diffusion_core import ModelConfig, UnetConfig  # noqa: E402
from diffusion_core.architectures import get_architecture  # noqa: E402
from diffusion_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402
from diffusion_core.convert import export_checkpoint as export_to, import_checkpoint, open_checkpoint  # noqa: E402
from diffusion_core.convert.__main__ import main as convert_main  # noqa: E402
from diffusion_core.parsing import ConfigError  # noqa: E402

TOLERANCE = 1e-4
ARCH = get_architecture("diffusers_unet2d")
LAYOUTS = {"cifar10": "subfolders", "small64": "pipeline", "class": "bare"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_parameter_table_is_diffusers_state_dict(name):
    unet, _ = build(name)
    cfg = ARCH.parse_config(dict(unet.config), "config.json")
    theirs = [(k, tuple(v.shape)) for k, v in unet.state_dict().items()]
    assert list(ARCH.parameter_shapes(cfg).items()) == theirs   # names, shapes and order
    if name == "cifar10":
        assert ARCH.parameter_count(cfg) == 35_746_307   # google/ddpm-cifar10-32's 35.7M
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    labels = {"class_labels": torch.zeros(2, dtype=torch.long)} if cfg.num_class_embeds else {}
    # the math kernel, so that the counter sees attention as matmuls
    with sdpa_kernel(SDPBackend.MATH), torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(torch.zeros(2, 3, cfg.sample_size, cfg.sample_size), torch.zeros(2), **labels)
    assert counter.get_total_flops() == ARCH.forward_flops(cfg, 2)


def _forward_case(name, tmp_path):
    unet, scheduler = build(name)
    folder = save(unet, scheduler, tmp_path / name, LAYOUTS[name])
    batch = 1 if name == "cifar10" else 2
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, 3, unet.config.sample_size, unet.config.sample_size), dtype=np.float32)
    inputs = {"class_labels": np.arange(batch, dtype=np.int64) * 3} if unet.config.num_class_embeds else {}
    with torch.no_grad():
        want = unet(torch.from_numpy(x), torch.full((batch,), 417.0),
                    **{k: torch.from_numpy(v) for k, v in inputs.items()}).sample.numpy()
    # PyTorch and MindSpore read the diffusers folder itself; ONNX Runtime a converted copy
    converted = import_checkpoint(folder, tmp_path / "converted")
    assert export_checkpoint(converted).max_abs_diff < TOLERANCE
    for backend, source in (("pytorch", folder), ("mindspore", folder), ("onnxruntime", converted)):
        if not backend_status(backend).available:
            continue
        model = load_model(backend, source)
        got = model.ops.to_numpy(model.model(model.ops.asarray(x), 417.0,
                                             **{k: model.ops.asarray(v) for k, v in inputs.items()}))
        assert np.abs(got - want).max() < TOLERANCE, backend
    assert np.abs(want).max() > 0.1
    return open_checkpoint(folder)


@pytest.mark.parametrize("name", ["small64", "class"])
def test_every_backend_runs_it_like_diffusers(name, tmp_path):
    checkpoint = _forward_case(name, tmp_path)
    assert checkpoint.layout == f"diffusers {LAYOUTS[name]}"
    assert checkpoint.config.notes["imported_from"]["format"] == "diffusers UNet2DModel"


@pytest.mark.slow
def test_the_cifar10_sized_model_runs_like_diffusers_on_every_backend(tmp_path):
    checkpoint = _forward_case("cifar10", tmp_path)
    assert checkpoint.config.diffusion.schedule == "linear" and checkpoint.layout == "diffusers subfolders"


def test_weights_saved_before_diffusers_0_14_load_under_todays_names(tmp_path):
    from safetensors.torch import load_file, save_file
    unet, scheduler = build("small64")
    folder = save(unet, scheduler, tmp_path / "old", "bare")
    path = folder / "diffusion_pytorch_model.safetensors"
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    renamed = {}
    for key, value in load_file(path).items():
        for new, deprecated in old.items():
            key = key.replace(f".{new}.", f".{deprecated}.")
        renamed[key] = value
    assert any(".proj_attn." in k for k in renamed)
    save_file(renamed, path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = unet(x, torch.tensor([5.0])).sample.numpy()
    model = load_model("pytorch", folder)
    assert np.abs(model.model(x, 5.0).numpy() - want).max() == 0


def test_pickle_only_weights_are_refused_in_one_sentence(tmp_path):
    unet, _ = build("class")
    unet.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    with pytest.raises(CheckpointError, match=r"only as pickle files \(diffusion_pytorch_model.bin\).*never "
                                              r"unpickles.*save_pretrained"):
        open_checkpoint(tmp_path / "pickled")
    with pytest.raises(CheckpointError, match="is a diffusers folder, not a toolkit checkpoint"):
        load_checkpoint(tmp_path / "pickled")   # not "re-export the checkpoint" any more


@pytest.mark.parametrize("change, words", [
    ({"time_embedding_type": "fourier"}, "time_embedding_type='fourier' is not supported"),
    ({"down_block_types": ["CrossAttnDownBlock2D", "AttnDownBlock2D"]}, "CrossAttnDownBlock2D"),
    ({"out_channels": 6}, "learned variance"),
    ({"class_embed_type": "timestep"}, "class_embed_type='timestep' is not supported"),
    ({"addition_embed_type": "text"}, r"field\(s\) \['addition_embed_type'\] that this toolkit does not support"),
    ({"norm_num_groups": "32"}, "norm_num_groups = '32' has the wrong type"),
])
def test_unsupported_fields_and_values_are_named(tmp_path, change, words):
    unet, scheduler = build("class")
    folder = save(unet, scheduler, tmp_path / "m", "bare")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(CheckpointError, match=words):
        open_checkpoint(folder)


def test_export_to_diffusers_opens_in_ddpm_pipeline(tmp_path, capsys):
    unet, scheduler = build("class")
    converted = import_checkpoint(save(unet, scheduler, tmp_path / "m", "bare"), tmp_path / "ours")
    assert convert_main(["export", "--to", "diffusers", str(converted), str(tmp_path / "exported")]) == 0
    pipeline = diffusers.DDPMPipeline.from_pretrained(tmp_path / "exported")
    x, labels = torch.randn(2, 3, 16, 16), torch.tensor([1, 7])
    with torch.no_grad():
        assert torch.equal(pipeline.unet(x, 9.0, class_labels=labels).sample, unet(x, 9.0, class_labels=labels).sample)
    np.testing.assert_allclose(pipeline.scheduler.alphas_cumprod.numpy(), scheduler.alphas_cumprod.numpy(), rtol=1e-6)
    own = save_checkpoint(tmp_path / "own", ModelConfig(network=UnetConfig(image_size=8, dim=8, dim_mults=(1, 2),
                                                                            full_attn=(False, True), resnet_block_groups=4)),
                          {k: np.zeros(s, np.float32) for k, s in get_architecture("unet").parameter_shapes(
                              UnetConfig(image_size=8, dim=8, dim_mults=(1, 2), full_attn=(False, True),
                                         resnet_block_groups=4)).items()})
    with pytest.raises(ConfigError, match="the unet architecture has no exact diffusers counterpart"):
        export_to(own, tmp_path / "nope")


def test_class_labels_are_a_required_declared_input():
    unet, _ = build("class")
    declared = ARCH.inputs(ARCH.parse_config(dict(unet.config)))
    labels = declared[2]
    assert (labels.name, labels.dtype, labels.optional) == ("class_labels", "int64", False)


def test_a_hub_repo_with_only_pickled_weights_gets_one_sentence(hub_server, tmp_path):
    import huggingface_hub

    from diffusion_core.hub import HubError, pull
    unet, _ = build("class")
    unet.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    api = huggingface_hub.HfApi(endpoint=hub_server.endpoint, token=hub_server.token)
    api.create_repo("tester/pickled")
    api.upload_folder(repo_id="tester/pickled", folder_path=tmp_path / "pickled")
    with pytest.raises(HubError, match=r"^tester/pickled \(revision 'main'\) holds its weights only as pickle "
                                       r"files \(diffusion_pytorch_model.bin\)"):
        pull("tester/pickled", cache_dir=tmp_path / "cache", endpoint=hub_server.endpoint)
    assert list((tmp_path / "cache").rglob("*.bin")) == []


def test_the_cli_imports_a_hub_repo_by_id(hub_server, tmp_path, capsys):
    import huggingface_hub
    unet, scheduler = build("class")
    folder = save(unet, scheduler, tmp_path / "repo", "subfolders")
    api = huggingface_hub.HfApi(endpoint=hub_server.endpoint, token=hub_server.token)
    api.create_repo("tester/classes")
    api.upload_folder(repo_id="tester/classes", folder_path=folder)
    assert convert_main(["import", "tester/classes", str(tmp_path / "out"), "--endpoint", hub_server.endpoint,
                         "--cache-dir", str(tmp_path / "cache")]) == 0
    config = load_checkpoint(tmp_path / "out").config
    assert config.notes["imported_from"]["source"].startswith("tester/classes@")
    assert config.network.num_class_embeds == 10 and config.diffusion.num_train_timesteps == 500
    assert convert_main(["import", str(tmp_path / "out"), str(tmp_path / "again")]) == 2
    assert "already a toolkit checkpoint" in capsys.readouterr().err


def test_the_app_says_why_it_cannot_sample_a_class_conditional_import(tmp_path):
    from webapp.service import DiffusionService, ServiceError
    unet, scheduler = build("class")
    service = DiffusionService(save(unet, scheduler, tmp_path / "m", "bare"))
    assert "diffusers_unet2d" in service.model_summary()
    with pytest.raises(ServiceError, match="needs class_labels for every image, which the page cannot choose"):
        service.generate("pytorch", "ddim", 5, 0.0, 0, 2)
