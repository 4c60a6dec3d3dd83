"""The app's service without Gradio: each method, bad inputs, repeatability, comparisons, Hub.

The checkpoints are tiny (16x16, T = 100, random weights): these tests check the wiring, not the
pictures. `tiny_checkpoint` is shared with test_app_api.py and test_app_browser.py.
"""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the app's tests build their tiny model with PyTorch")

import webapp.models as models_module  # noqa: E402
from diffusion_core import SAMPLERS  # noqa: E402
from webapp import DiffusionService, ServerSettings, ServiceError  # noqa: E402
from webapp.images import display_grid, frame_steps, pixel_difference  # noqa: E402

T = 100          # training timesteps of the tiny model


def shown(markdown: str) -> str:
    """What a Markdown page shows of text escaped by webapp.text.plain (backslash escapes dropped)."""
    import re
    return re.sub(r"\\(.)", r"\1", markdown)
_BUILT: dict[str, Path] = {}  # one build per test session, whichever module asks first


def tiny_checkpoint(tmp_path_factory, *, onnx: bool = True) -> Path:
    """A random 16x16 checkpoint; with model.onnx when asked and the ONNX exporter is here."""
    key = "onnx" if onnx else "plain"
    if key not in _BUILT:
        import torch

        from backends import build_network
        from backends.pytorch import state_to_numpy
        from diffusion_core import DiffusionConfig, ModelConfig, UnetConfig
        from diffusion_core.checkpoint import save_checkpoint

        torch.manual_seed(0)
        unet = UnetConfig(image_size=16, channels=1, dim=8, dim_mults=(1, 2), full_attn=(False, True),
                          resnet_block_groups=4)
        config = ModelConfig(network=unet, diffusion=DiffusionConfig(num_train_timesteps=T),
                             notes={"dataset": "nothing (random weights)"})
        folder = save_checkpoint(tmp_path_factory.mktemp("app_model") / key, config,
                                 state_to_numpy(build_network("pytorch", unet)))
        if onnx:
            try:
                from backends.onnx.export import export_checkpoint
                export_checkpoint(folder, verify=False)  # verification is test_onnx.py's job
            except ImportError:
                pass  # the ONNX backend then says why it cannot run, which is tested too
        _BUILT[key] = folder
    return _BUILT[key]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    return DiffusionService(tiny_checkpoint(tmp_path_factory, onnx=False), max_batch=8)


@pytest.fixture(scope="module")
def onnx_service(tmp_path_factory):
    folder = tiny_checkpoint(tmp_path_factory, onnx=True)
    if not (folder / "model.onnx").is_file():
        pytest.skip("backends.onnx.export is not available here, so the tiny model has no model.onnx")
    return DiffusionService(folder, max_batch=8)


# --- generate --------------------------------------------------------------------------------

def test_generate_gives_grid_frames_summary_and_progress(service):
    reports = []
    result = service.generate("pytorch", "ddim", 10, 0.0, 3, 4, progress=lambda f, d: reports.append((f, d)))
    assert result.images.shape == (4, 1, 16, 16) and result.images.dtype == np.float32
    # 2x2 cells of 16 px with 2 px padding = 38 px, upscaled nearest by 8 so each cell is 128 px
    assert result.grid.shape == (38 * 8, 38 * 8) and result.grid.dtype == np.uint8
    assert len(result.frames) == 8 and result.frames[-1][1] == "step 10/10, t = 9"
    assert result.frames[0][0].shape == result.grid.shape
    assert [f for f, _ in reports] == pytest.approx([i / 10 for i in range(1, 11)])
    assert reports[-1][1] == "sampling: step 10/10"
    assert "4 images" in result.summary and "seed 3" in result.summary and "PyTorch" in result.summary


def test_same_seed_same_images_across_calls(service):
    first = service.generate("pytorch", "euler_ancestral", 5, 0.0, 11, 2).images
    again = service.generate("pytorch", "euler_ancestral", 5, 0.0, 11, 2).images
    other = service.generate("pytorch", "euler_ancestral", 5, 0.0, 12, 2).images
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_eta_is_read_by_ddim_only(service):
    assert [name for name in SAMPLERS if service.sampler_uses_eta(name)] == ["ddim"]
    # A hidden eta slider may still hold a value: samplers without eta ignore it.
    np.testing.assert_array_equal(service.generate("pytorch", "ddpm", 5, 0.7, 1, 2).images,
                                  service.generate("pytorch", "ddpm", 5, 0.0, 1, 2).images)
    assert not np.array_equal(service.generate("pytorch", "ddim", 5, 1.0, 1, 2).images,
                              service.generate("pytorch", "ddim", 5, 0.0, 1, 2).images)


def test_spacing_and_karras_default_to_the_registry_and_are_said(service):
    assert "logsnr spacing, Karras sigmas off" in service.generate("pytorch", "unipc", 4, 0.0, 0, 2).summary
    assert "trailing spacing, Karras sigmas on" in service.generate("pytorch", "heun", 3, 0.0, 0, 2).summary
    ddim = service.generate("pytorch", "ddim", 4, 0.0, 0, 2).summary
    assert "trailing spacing, seed" in ddim and "Karras" not in ddim     # DDIM has no Karras sigmas
    picked = service.generate("pytorch", "unipc", 4, 0.0, 0, 2, spacing="trailing", karras="on")
    assert "trailing spacing, Karras sigmas on" in picked.summary
    recommended = service.generate("pytorch", "unipc", 4, 0.0, 0, 2)
    explicit = service.generate("pytorch", "unipc", 4, 0.0, 0, 2, spacing="logsnr", karras="off")
    np.testing.assert_array_equal(recommended.images, explicit.images)
    assert not np.array_equal(recommended.images, picked.images)
    # image-to-image takes them too
    redrawn = service.image_to_image("pytorch", "heun", 3, 0, np.zeros((16, 16), np.uint8), 0.9, karras="off")
    assert "Karras sigmas off" in redrawn.summary


@pytest.mark.parametrize("sampler, spacing, karras, message", [
    ("ddim", "recommended", "on", "DDIM .* does not use Karras sigmas .*; leave it at recommended"),
    ("ddpm", "recommended", "on", "does not use Karras sigmas"),
    ("euler", "cosine", "recommended", "unknown timestep spacing cosine; choose one of recommended, leading"),
    ("euler", "recommended", "yes", "Karras sigmas must be one of recommended, on, off"),
])
def test_bad_spacing_or_karras_is_one_sentence(service, sampler, spacing, karras, message):
    with pytest.raises(ServiceError, match=message):
        service.generate("pytorch", sampler, 4, 0.0, 0, 2, spacing=spacing, karras=karras)
    with pytest.raises(ServiceError, match=message):
        service.image_to_image("pytorch", sampler, 4, 0, np.zeros((16, 16), np.uint8), 0.5, spacing=spacing,
                               karras=karras)


def test_bf16_is_the_fast_path_where_the_cpu_has_it(service, monkeypatch):
    monkeypatch.setattr(models_module, "bf16_instructions", lambda: True)
    fast = service.generate("pytorch", "dpmpp_2m", 4, 0.0, 0, 2, bf16=True)
    exact = service.generate("pytorch", "dpmpp_2m", 4, 0.0, 0, 2)
    assert ", bf16, on PyTorch" in fast.summary and "bf16" not in exact.summary
    difference = np.abs(fast.images - exact.images)
    # rounded differently, the same images: small on average; the worst pixel of a few images
    # moves more (bf16 emulated on AVX2 CPUs and the regrouped layers: up to 0.21 seen)
    assert 0 < difference.mean() < 0.01 and difference.max() < 0.35, (difference.mean(), difference.max())
    with pytest.raises(ServiceError, match="bf16 must be true or false"):
        service.generate("pytorch", "dpmpp_2m", 4, 0.0, 0, 2, bf16="yes")


def test_bf16_on_a_backend_without_it_says_why(onnx_service):
    with pytest.raises(ServiceError, match="ONNX Runtime cannot sample in bf16: its CPU provider"):
        onnx_service.generate("onnxruntime", "dpmpp_2m", 4, 0.0, 0, 2, bf16=True)


def test_bf16_is_refused_where_it_would_be_emulated(tmp_path_factory, monkeypatch):
    monkeypatch.setattr(models_module, "bf16_instructions", lambda: False)
    fresh = DiffusionService(tiny_checkpoint(tmp_path_factory, onnx=False), max_batch=8)
    with pytest.raises(ServiceError, match="no bf16 instructions .* leave bf16 off"):
        fresh.generate("pytorch", "dpmpp_2m", 4, 0.0, 0, 2, bf16=True)
    assert "PyTorch" in fresh.generate("pytorch", "dpmpp_2m", 4, 0.0, 0, 2).summary


def test_fitted_timesteps_are_the_recommended_spacing_and_said(tmp_path_factory):
    import json
    folder = shutil.copytree(tiny_checkpoint(tmp_path_factory, onnx=False), tmp_path_factory.mktemp("fit") / "m")
    data = json.loads((folder / "config.json").read_text())
    data["fitted_timesteps"] = {"unipc": {"4": [98.0, 60.0, 20.0, 0.0]}}
    (folder / "config.json").write_text(json.dumps(data))
    fitted = DiffusionService(folder, max_batch=8)
    assert "optimized spacing" in fitted.generate("pytorch", "unipc", 4, 0.0, 0, 2).summary
    assert "logsnr spacing" in fitted.generate("pytorch", "unipc", 5, 0.0, 0, 2).summary
    with pytest.raises(ServiceError, match="no timesteps fitted for UniPC.* at 5 steps"):
        fitted.generate("pytorch", "unipc", 5, 0.0, 0, 2, spacing="optimized")


def test_ui_numbers_arrive_as_floats(service):
    np.testing.assert_array_equal(service.generate("pytorch", "ddim", 5.0, 0.0, 4.0, 2.0).images,
                                  service.generate("pytorch", "ddim", 5, 0.0, 4, 2).images)


@pytest.mark.parametrize("change, message", [
    ({"steps": 0}, "steps must be an integer between 1 and the number of training timesteps T = 100"),
    ({"steps": T + 1}, "T = 100, got 101"),
    ({"steps": 2.5}, "steps must be a whole number"),
    ({"batch_size": 0}, "batch size must be between 1 and 8"),
    ({"batch_size": 9}, "this server's limit"),
    ({"seed": -1}, "seed must be from 0 to 2"),
    ({"seed": 1.5}, "seed must be a whole number, got 1.5"),
    ({"seed": "7"}, "seed must be a whole number"),
    ({"sampler": "plms"}, "unknown sampler 'plms'; choose one of ddpm, ddim"),
    ({"backend": "jax"}, "unknown backend 'jax'; choose one of pytorch"),
    ({"eta": 1.5}, "eta must be between 0"),
])
def test_bad_inputs_say_what_to_do(service, change, message):
    request = dict(backend="pytorch", sampler="ddim", steps=5, eta=0.0, seed=0, batch_size=2) | change
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("|", r"\|")):
        service.generate(**request)


def test_missing_model_is_a_message_not_a_crash(tmp_path):
    service = DiffusionService(tmp_path / "nowhere")
    assert service.model_summary().startswith("**No model loaded.**")
    assert "python -m backends.pytorch.train" in shown(service.model_summary())
    assert {s.name for s in service.backend_statuses()} >= {"pytorch", "onnxruntime", "mindspore"}
    with pytest.raises(ServiceError, match="no model to sample from.*pull one from the Hub"):
        service.generate("pytorch", "ddim", 5, 0.0, 0, 1)


def test_model_summary_describes_the_checkpoint(service):
    summary = service.model_summary()
    assert "16x16" in summary and "T = 100" in summary and "random weights" in summary
    assert "No model.onnx" in summary


def test_unavailable_backend_gives_its_reason(service):
    onnx = next(s for s in service.backend_statuses() if s.name == "onnxruntime")
    assert not onnx.available and onnx.reason
    with pytest.raises(ServiceError, match="ONNX Runtime cannot run here: " + onnx.reason[:20]):
        service.generate("onnxruntime", "ddim", 5, 0.0, 0, 1)
    result = service.compare(["onnxruntime"], "ddim", 3, 0, 1, "pytorch")
    assert [r.name for r in result.runs] == ["pytorch", "onnxruntime"]
    row = result.table()[1]
    assert row[0] == "ONNX Runtime" and row[1] is None and row[-1] == onnx.reason


def test_models_load_once_and_are_shared(tmp_path_factory, monkeypatch):
    loads = []
    real = models_module.load_model

    def counting(name, checkpoint, **kwargs):
        loads.append(name)
        return real(name, checkpoint, **kwargs)
    monkeypatch.setattr(models_module, "load_model", counting)
    service = DiffusionService(tiny_checkpoint(tmp_path_factory, onnx=False))
    threads = [threading.Thread(target=service.generate, args=("pytorch", "ddim", 2, 0.0, i, 1))
               for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == ["pytorch"]


def test_concurrent_requests_match_a_solo_run(service):
    solo = service.generate("pytorch", "dpmpp_2m", 6, 0.0, 5, 3).images
    results: list = [None] * 6

    def work(i):
        results[i] = service.generate("pytorch", "dpmpp_2m", 6, 0.0, 5, 3).images
    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for images in results:
        np.testing.assert_array_equal(images, solo)


def test_torch_threads_are_set_deliberately_when_the_first_model_loads(tmp_path_factory, monkeypatch):
    import torch
    before = torch.get_num_threads()
    monkeypatch.setenv("DIFFUSION_TORCH_THREADS", "1")
    try:
        torch.set_num_threads(2)
        service = DiffusionService(tiny_checkpoint(tmp_path_factory, onnx=False))
        assert service.settings.torch_threads == 1
        assert torch.get_num_threads() == 2          # start-up leaves torch alone (and unimported)
        service.store.model("pytorch", service.store.checkpoint(service.default_session.folder))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# --- compare ---------------------------------------------------------------------------------

def test_pixel_difference_in_both_units():
    reference = np.zeros((1, 1, 2, 2), np.float32)
    images = reference.copy()
    images[0, 0, 1, 1] = 0.5     # 127.5 -> 191.25: 128 vs 191 after rounding, 63 levels apart
    images[0, 0, 0, 0] = 0.003   # a third of a level: the same 8-bit value
    difference = pixel_difference(images, reference)
    assert difference.max_abs == pytest.approx(0.5) and difference.max_levels == 63
    assert pixel_difference(reference, reference).max_levels == 0


def test_compare_table_figures(onnx_service):
    reports = []
    result = onnx_service.compare(["onnxruntime", "pytorch"], "heun", 4, 9, 2, "pytorch",
                                  progress=lambda f, d: reports.append((f, d)))
    reference, onnx = result.runs
    assert (reference.name, onnx.name) == ("pytorch", "onnxruntime")
    table = result.table()
    assert len(table[0]) == len(result.HEADERS)
    assert table[0][0] == "PyTorch" and table[0][4] == 0.0 and table[0][5] == 0 and table[0][-1] == "reference"
    expected = float(np.abs(onnx.images.astype(np.float64) - reference.images).max())
    assert onnx.max_abs_diff == pytest.approx(expected)
    assert 0 < onnx.max_abs_diff < 1e-3 and onnx.max_diff_levels <= 1   # same noise, float rounding
    for run, row in zip(result.runs, table):
        assert row[1] == pytest.approx(run.seconds, abs=1e-3)
        assert row[2] == pytest.approx(1000 * run.seconds / 4, abs=0.01)
        assert row[3] == pytest.approx(2 / run.seconds, rel=0.01)
    assert reports[-1] == (pytest.approx(1.0), "ONNX Runtime: step 4/4")
    # Same seed on the ONNX backend alone: the same images as inside the comparison.
    np.testing.assert_array_equal(onnx_service.generate("onnxruntime", "heun", 4, 0.0, 9, 2).images, onnx.images)


def test_compare_needs_a_reference_and_another_backend(service):
    with pytest.raises(ServiceError, match="pick a reference backend"):
        service.compare(["pytorch"], "ddim", 3, 0, 1, "")
    with pytest.raises(ServiceError, match="at least one backend besides the reference"):
        service.compare(["pytorch"], "ddim", 3, 0, 1, "pytorch")
    with pytest.raises(ServiceError, match="the reference backend cannot run here"):
        service.compare(["pytorch"], "ddim", 3, 0, 1, "onnxruntime")


def test_images_helpers():
    assert frame_steps(1) == {0} and frame_steps(3) == {0, 1, 2}
    assert frame_steps(100) == {0, 14, 28, 42, 57, 71, 85, 99}
    assert display_grid(np.zeros((64, 3, 28, 28), np.float32)).shape == (242 * 5, 242 * 5, 3)


# --- Hub -------------------------------------------------------------------------------------

def test_push_then_pull_switches_the_model(tmp_path_factory, tmp_path, hub_server, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub_server.endpoint)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    source = tmp_path / "source"
    shutil.copytree(tiny_checkpoint(tmp_path_factory, onnx=False), source)
    service = DiffusionService(source, hub_cache_dir=tmp_path / "cache")
    url = service.push("tester/tiny", hub_server.token, False, "first upload")
    assert url.startswith(hub_server.endpoint) and hub_server.token not in url
    # The Space's HF_TOKEN secret pushes only where the operator allows it.
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    with pytest.raises(ServiceError, match="pushing needs your own Hugging Face token"):
        service.push("tester/tiny", "", True, "")
    allowed = DiffusionService(source, settings=ServerSettings(allow_secret_push=True),
                               hub_cache_dir=tmp_path / "cache")
    assert allowed.push("tester/tiny", "", True, "").startswith(hub_server.endpoint)

    fresh = DiffusionService(tmp_path / "nowhere", hub_cache_dir=tmp_path / "cache")
    session, message = fresh.pull(" tester/tiny ", "")
    assert message.startswith("Pulled tester/tiny@main")
    assert "`tester/tiny@main" in fresh.model_summary(session)
    assert fresh.model_summary().startswith("**No model loaded.**")  # other sessions keep theirs
    np.testing.assert_array_equal(fresh.generate("pytorch", "ddim", 3, 0.0, 2, 2, session=session).images,
                                  service.generate("pytorch", "ddim", 3, 0.0, 2, 2).images)


def test_hub_errors_are_readable_and_never_show_the_token(tmp_path_factory, tmp_path, hub_server,
                                                         monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub_server.endpoint)
    service = DiffusionService(tiny_checkpoint(tmp_path_factory, onnx=False), hub_cache_dir=tmp_path)
    with pytest.raises(ServiceError, match="repo id 'not a repo' is malformed"):
        service.pull("not a repo", "")
    service.push("tester/exists", hub_server.token, False, "")
    with pytest.raises(ServiceError, match="revision 'nope' does not exist"):
        service.pull("tester/exists", "nope")
    wrong = "hf_wrong_" + "x" * 20
    with pytest.raises(ServiceError) as caught:
        service.push("tester/tiny", wrong, False, "")
    assert "refused the access token" in str(caught.value) and wrong not in str(caught.value)
    before = service.model_summary()
    with pytest.raises(ServiceError):
        service.pull("tester/missing", "")
    assert service.model_summary() == before   # a failed pull keeps the current model
