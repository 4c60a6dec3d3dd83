"""The running app through gradio_client: every tab's endpoint, errors, a queue of equal requests.

The app runs in this process on 127.0.0.1 (a free port, `prevent_thread_lock=True`), serving the
tiny checkpoint of test_app_service.py, which has a model.onnx when the ONNX exporter is here.
"""
from __future__ import annotations

import shutil
import socket
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("torch", reason="the app's tests build their tiny model with PyTorch")
pytest.importorskip("gradio_client", reason="gradio_client is in requirements.txt")

from test_app_service import tiny_checkpoint  # noqa: E402

# Gradio 6.31 calls pandas 3 and NumPy APIs that they deprecate; not ours to fix, only noise.
pytestmark = [pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
              pytest.mark.filterwarnings("ignore:`np.bool8` is a deprecated alias")]

CONCURRENCY = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_app(model_dir, hub_cache_dir, concurrency: int = CONCURRENCY):
    """Start the app in a thread; returns (demo, service, url). Call demo.close() after."""
    import app
    from webapp import DiffusionService

    service = DiffusionService(model_dir, max_batch=8, hub_cache_dir=hub_cache_dir)
    demo = app.build_demo(service, concurrency=concurrency)
    port = free_port()
    app.launch(demo, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    return demo, service, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def running_app(tmp_path_factory):
    demo, service, url = launch_app(tiny_checkpoint(tmp_path_factory, onnx=True),
                                    tmp_path_factory.mktemp("hub_cache"))
    yield service, url
    demo.close()


@pytest.fixture(scope="module")
def client(running_app):
    from gradio_client import Client
    return Client(running_app[1], verbose=False)


def read_png(path) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as image:
        return np.asarray(image)


def generate(client, backend="pytorch", sampler="ddim", steps=5, eta=0.0, seed=0, batch_size=2,
             class_label="any", guidance=1.0):
    return client.predict(backend, sampler, steps, eta, seed, batch_size, class_label, guidance,
                          api_name="/generate")


def test_endpoints_are_the_service_methods(client):
    api = client.view_api(print_info=False, return_format="dict")
    assert sorted(api["named_endpoints"]) == ["/compare", "/generate", "/image_to_image", "/pull", "/push"]
    names = [p["parameter_name"] for p in api["named_endpoints"]["/generate"]["parameters"]]
    # spacing, karras (and bf16) last, with defaults, so older positional calls still work
    assert names == ["backend", "sampler", "steps", "eta", "seed", "batch_size", "class_label", "guidance",
                     "spacing", "karras", "bf16"]
    assert api["named_endpoints"]["/generate"]["parameters"][-1]["parameter_default"] is False
    for endpoint in ("/generate", "/image_to_image", "/compare"):
        parameters = [p for p in api["named_endpoints"][endpoint]["parameters"] if p["parameter_name"] != "bf16"]
        assert [p["parameter_name"] for p in parameters][-2:] == ["spacing", "karras"]
        assert all(p["parameter_default"] == "recommended" for p in parameters[-2:])


def test_spacing_and_karras_reach_the_sampler(client):
    summary = generate(client, sampler="heun", steps=4)[2]
    assert "trailing spacing, Karras sigmas on" in summary          # Heun's recommended settings
    summary = client.predict("pytorch", "heun", 4, 0.0, 0, 2, "any", 1.0, "logsnr", "off", api_name="/generate")[2]
    assert "logsnr spacing, Karras sigmas off" in summary
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError, match="DDIM .* does not use Karras sigmas"):
        client.predict("pytorch", "ddim", 4, 0.0, 0, 2, "any", 1.0, "recommended", "on", api_name="/generate")


def test_generate(client):
    grid, frames, summary = generate(client, sampler="euler", steps=6, seed=3, batch_size=4)
    assert read_png(grid).shape == (38 * 8, 38 * 8)   # 2x2 grid of 16 px cells, upscaled by 8
    assert len(frames) == 6 and frames[-1]["caption"].startswith("step 6/6, t = ")
    assert read_png(frames[0]["image"]).shape == (38 * 8, 38 * 8)
    assert "4 images with Euler" in summary and "seed 3" in summary


def test_compare(client, running_app):
    service = running_app[0]
    usable = [s.name for s in service.backend_statuses() if s.available]
    if "onnxruntime" not in usable:
        pytest.skip("the tiny model has no model.onnx (backends.onnx.export missing)")
    grids, table = client.predict(usable, "ddim", 4, 5, 2, "pytorch", api_name="/compare")
    titles = {s.name: s.title for s in service.backend_statuses()}
    assert [g["caption"] for g in grids] == [titles[name] for name in usable]
    rows = table["data"]
    assert table["headers"][:4] == ["backend", "total s", "ms / step", "images / s"]
    assert rows[0][0] == "PyTorch" and rows[0][4] == 0.0 and rows[0][-1] == "reference"
    for row in rows[1:]:
        assert row[1] > 0 and row[2] > 0 and row[3] > 0
        assert 0 <= row[4] < 1e-3 and row[5] in (0, 1)   # same seed, same images up to float rounding
    reference = read_png(grids[0]["image"])
    for grid in grids[1:]:
        assert np.abs(read_png(grid["image"]).astype(int) - reference).max() <= 1


@pytest.mark.parametrize("change, message", [
    ({"steps": 101}, "steps must be an integer between 1 and the number of training timesteps T = 100"),
    ({"batch_size": 9}, "greater than maximum value 8"),
    ({"eta": 2.0}, "greater than maximum value 1"),
    ({"backend": "jax"}, "not in the list of choices"),
    ({"class_label": "3"}, "not in the list of choices"),      # the tiny model is unconditional
    ({"guidance": 2.0}, "classifier-free guidance needs a class-conditional model; this one is unconditional"),
])
def test_bad_inputs_get_a_message_and_the_server_keeps_serving(client, change, message):
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError, match=message):
        generate(client, **change)
    assert "2 images" in generate(client)[2]


def test_eight_concurrent_requests_equal_a_solo_run(client):
    solo = read_png(generate(client, sampler="ddpm", steps=8, seed=42, batch_size=3)[0])
    jobs = [client.submit("pytorch", "ddpm", 8, 0.0, 42, 3, "any", 1.0, api_name="/generate") for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda job: job.result(timeout=300), jobs))
    for grid, _, _ in results:
        np.testing.assert_array_equal(read_png(grid), solo)


def test_hub_push_and_pull(client, running_app, tmp_path_factory, tmp_path, hub_server, monkeypatch):
    from gradio_client import Client
    from gradio_client.exceptions import AppError
    service, url = running_app
    monkeypatch.setenv("HF_ENDPOINT", hub_server.endpoint)
    monkeypatch.setenv("HF_TOKEN", hub_server.token)   # the Space's secret: neither pulls nor pushes
    with pytest.raises(AppError, match="repo id 'no good' is malformed"):
        client.predict("no good", "", "", api_name="/pull")
    wrong = "hf_wrong_" + "y" * 20
    with pytest.raises(AppError, match="refused the access token") as caught:
        client.predict("tester/app", wrong, False, "", api_name="/push")
    assert wrong not in str(caught.value)
    with pytest.raises(AppError, match="pushing needs your own Hugging Face token"):
        client.predict("tester/app", "", False, "", api_name="/push")

    status = client.predict("tester/app", hub_server.token, False, "from the app", api_name="/push")
    assert status.startswith(f"Pushed to {hub_server.endpoint}/tester/app") and hub_server.token not in status
    # A checkpoint without model.onnx: after pulling it, ONNX Runtime says why it cannot run.
    from webapp import DiffusionService
    plain = tmp_path / "plain"
    shutil.copytree(tiny_checkpoint(tmp_path_factory, onnx=False), plain)
    DiffusionService(plain).push("tester/plain", hub_server.token, False, "")
    visitor = Client(url, verbose=False)               # a second visitor, with a session of its own
    message, model_info, *_ = visitor.predict("tester/plain", "main", "", api_name="/pull")
    assert message.startswith("Pulled tester/plain@main")
    assert "tester/plain@main" in model_info and "No model.onnx" in model_info
    with pytest.raises(AppError, match="ONNX Runtime cannot run here: .*no model.onnx"):
        generate(visitor, backend="onnxruntime")
    assert "on PyTorch" in generate(visitor)[2]
    assert "on ONNX Runtime" in generate(client, backend="onnxruntime")[2]   # the first kept its model


def test_page_without_a_model_says_how_to_get_one(tmp_path):
    import app
    from webapp import DiffusionService

    demo = app.build_demo(DiffusionService(tmp_path / "models" / "default"))
    shown = [block.value for block in demo.blocks.values() if getattr(block, "elem_id", None) == "model-info"]
    assert shown and shown[0].startswith("**No model loaded.**")
    from test_app_service import shown as rendered
    assert "python -m backends.pytorch.train" in rendered(shown[0]) and "Hub tab" in shown[0]


def test_help_names_every_setting(capsys):
    import app
    with pytest.raises(SystemExit) as exited:
        app.parse_args(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for setting in ("--model-dir", "DIFFUSION_MODEL_DIR", "--host", "--port", "--concurrency",
                    "--max-batch", "--torch-threads", "HF_TOKEN", "HF_ENDPOINT"):
        assert setting in text
    assert app.parse_args(["--port", "9000", "--max-batch", "4"]).max_batch == 4
