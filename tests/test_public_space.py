"""Each attack a hostile visitor made on the public app, replayed against it (or the function
underneath) and shown to be closed. The numbers follow the issue that reported them."""
from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time

import numpy as np
import pytest

pytest.importorskip("torch", reason="the app's tests build their tiny model with PyTorch")
pytest.importorskip("gradio_client", reason="gradio_client is in requirements.txt")

from test_app_api import launch_app  # noqa: E402
from test_app_service import tiny_checkpoint  # noqa: E402
from webapp import DiffusionService, ServerSettings, ServiceError  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]


def generate_args(**change):
    args = dict(backend="pytorch", sampler="ddim", steps=5, eta=0.0, seed=0, batch_size=2,
                class_label="any", guidance=1.0) | change
    return list(args.values())


# 1. the most expensive request, and abandoned requests that kept sampling ----------------------

def test_1_an_over_budget_request_is_refused_before_it_runs(tmp_path_factory):
    service = DiffusionService(tiny_checkpoint(tmp_path_factory, onnx=False),
                               settings=ServerSettings(max_batch=64, max_tflop=0.05))
    start = time.perf_counter()
    with pytest.raises(ServiceError, match="more than this server's 0.05 TFLOP per request"):
        service.generate("pytorch", "heun", 100, 0.0, 0, 64)
    assert time.perf_counter() - start < 1.0


def test_1_a_cancelled_or_abandoned_request_stops_within_a_step(tmp_path_factory):
    from gradio_client import Client
    demo, service, url = launch_app(tiny_checkpoint(tmp_path_factory, onnx=False),
                                    tmp_path_factory.mktemp("hub"), concurrency=1)
    steps_seen = []
    import diffusion_core.samplers as samplers
    real = samplers.sample

    def counting(*args, callback=None, **kwargs):
        def both(info):
            steps_seen.append(info.index)
            time.sleep(0.05)  # a slow model: 100 steps take 5 s or more
            if callback:
                callback(info)
        return real(*args, callback=both, **kwargs)
    samplers.sample = counting
    try:
        client = Client(url, verbose=False)
        job = client.submit(*generate_args(steps=100), api_name="/generate")
        while len(steps_seen) < 3:
            time.sleep(0.05)
        job.cancel()
        cancelled_at = len(steps_seen)
        time.sleep(1.0)
        assert len(steps_seen) <= cancelled_at + 3   # the sampling thread stopped, not ran to 100
        start = time.perf_counter()                  # and the one worker is free again
        assert "2 images" in client.predict(*generate_args(), api_name="/generate")[2]
        assert time.perf_counter() - start < 10
    finally:
        samplers.sample = real
        demo.close()


def test_1_the_time_limit_stops_a_request_at_its_next_step(tmp_path_factory):
    service = DiffusionService(tiny_checkpoint(tmp_path_factory, onnx=False),
                               settings=ServerSettings(time_limit_s=0.3))
    start = time.perf_counter()
    with pytest.raises(ServiceError, match="ran past this server's time limit of 0.3 s"):
        service.generate("pytorch", "ddpm", 100, 0.0, 0, 8)
    assert time.perf_counter() - start < 3


def test_1_a_gone_visitor_is_noticed():
    from webapp.events import visitor_gone

    class Event:
        def __init__(self, session, alive):
            self.session_hash, self.alive = session, alive

    class Queue:
        active_jobs = [[Event("a", True)], None, [Event("b", False)]]

    class Demo:
        _queue = Queue()

    class Request:
        def __init__(self, session):
            self.session_hash = session
    assert visitor_gone(Demo(), Request("b")) and not visitor_gone(Demo(), Request("a"))


# 2. the server's token pulled a private repo, and pushed it public -----------------------------

def test_2_a_private_repo_stays_private(tmp_path_factory, tmp_path, hub_server, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub_server.endpoint)
    owner = DiffusionService(tiny_checkpoint(tmp_path_factory, onnx=False))
    owner.push("tester/secret", hub_server.token, True, "private model")
    monkeypatch.setenv("HF_TOKEN", hub_server.token)   # the Space's secret
    visitor = DiffusionService(tmp_path / "none", hub_cache_dir=tmp_path / "cache")
    with pytest.raises(ServiceError, match="was not found"):
        visitor.pull("tester/secret", "")
    with pytest.raises(ServiceError, match="pushing needs your own Hugging Face token"):
        visitor.push("tester/public-copy", "", False, "")
    session, _ = visitor.pull("tester/secret", "", hub_server.token)  # the owner's own token works
    assert visitor.checkpoint(session).config.notes


# 3. one visitor's pull swapped the model for everyone: see test_app_api.test_hub_push_and_pull --

# 4. a 512-pixel config beside the default weights ---------------------------------------------

def test_4_a_config_that_cannot_fit_gets_a_sentence_not_an_allocation(tmp_path_factory, tmp_path):
    folder = tmp_path / "huge"
    shutil.copytree(tiny_checkpoint(tmp_path_factory, onnx=False), folder)
    config = json.loads((folder / "config.json").read_text())
    config["network"]["image_size"] = 512       # the weights of a convolutional net fit any size
    (folder / "config.json").write_text(json.dumps(config))
    service = DiffusionService(folder)
    with pytest.raises(ServiceError, match=r"needs about [\d,]+ MB for a single 512x512 image, more than "
                                           r"this server's 2,048 MB per request"):
        service.generate("pytorch", "ddim", 2, 0.0, 0, 1)
    assert "No model loaded" in service.model_summary()


# 5. notes rendered as Markdown fetched an outside image -----------------------------------------

def test_5_untrusted_text_is_shown_as_text(tmp_path_factory, tmp_path):
    folder = tmp_path / "notes"
    shutil.copytree(tiny_checkpoint(tmp_path_factory, onnx=False), folder)
    config = json.loads((folder / "config.json").read_text())
    config["notes"]["dataset"] = "![x](http://198.51.100.7/pixel.png) <img src=http://198.51.100.7/a>"
    (folder / "config.json").write_text(json.dumps(config))
    summary = DiffusionService(folder).model_summary()
    import re
    assert not re.search(r"(?<!\\)!\[|(?<!\\)<img|(?<!\\)\]\(", summary)  # nothing unescaped
    assert r"\!\[x\]" in summary  # shown, escaped


# 6. the concurrency limit was per event -------------------------------------------------------

def test_6_one_limit_for_every_sampling_event(tmp_path_factory):
    from gradio_client import Client
    demo, service, url = launch_app(tiny_checkpoint(tmp_path_factory, onnx=True),
                                    tmp_path_factory.mktemp("hub"), concurrency=2)
    import diffusion_core.samplers as samplers
    real, running, most = samplers.sample, [0], [0]
    lock = threading.Lock()

    def counting(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.2)
            return real(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1
    samplers.sample = counting
    try:
        client = Client(url, verbose=False)
        jobs = [client.submit(*generate_args(), api_name="/generate") for _ in range(3)]
        jobs += [client.submit(["onnxruntime"], "ddim", 3, 0, 1, "pytorch", "any", 1.0, api_name="/compare")
                 for _ in range(3)]
        for job in jobs:
            job.result(timeout=120)
    finally:
        samplers.sample = real
        demo.close()
    assert most[0] <= 2


# 7. disk use grew without bound ----------------------------------------------------------------

def test_7_images_kept_and_pulls_are_bounded(tmp_path_factory, tmp_path, hub_server, monkeypatch):
    from webapp.outbox import PngOutbox
    outbox = PngOutbox(tmp_path / "out", keep_files=5)
    for _ in range(20):
        outbox.save(np.zeros((4, 4), np.uint8))
    assert len(list((tmp_path / "out").iterdir())) == 5
    monkeypatch.setenv("HF_ENDPOINT", hub_server.endpoint)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint(tmp_path_factory, onnx=False), broken)
    from diffusion_core import hub
    hub.push(broken, "tester/broken", token=hub_server.token)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    from huggingface_hub import HfApi
    HfApi(endpoint=hub_server.endpoint, token=hub_server.token).upload_file(
        path_or_fileobj=str(broken / "model.safetensors"), path_in_repo="model.safetensors",
        repo_id="tester/broken")
    cache = tmp_path / "cache"
    (cache / "incoming-deadbeef").mkdir(parents=True)          # a pull killed long ago
    os.utime(cache / "incoming-deadbeef", (0, 0))
    service = DiffusionService(tmp_path / "none", hub_cache_dir=cache,
                               settings=ServerSettings(max_download_mb=1))
    with pytest.raises(ServiceError, match="truncated or corrupt"):
        service.pull("tester/broken", "")
    assert sorted(p.name for p in cache.iterdir()) == ["accepted"]   # nothing else was kept
    assert list((cache / "accepted").iterdir()) == []


# 8. malformed configs escaped as other exceptions -----------------------------------------------

@pytest.mark.parametrize("change, words", [
    (lambda c: c["network"].update(resnet_block_groups=0), "resnet_block_groups must be a positive integer"),
    (lambda c: c["network"].update(resnet_block_groups=-8), "resnet_block_groups must be a positive integer"),
    (lambda c: c.update(notes=5), "notes must be a JSON object"),
])
def test_8_malformed_configs_are_one_sentence_in_the_page(tmp_path_factory, tmp_path, change, words):
    folder = tmp_path / "bad"
    shutil.copytree(tiny_checkpoint(tmp_path_factory, onnx=False), folder)
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))
    import app
    demo = app.build_demo(DiffusionService(folder))   # what app.py --model-dir does: no traceback
    shown = [b.value for b in demo.blocks.values() if getattr(b, "elem_id", None) == "model-info"][0]
    from test_app_service import shown as rendered
    assert shown.startswith("**No model loaded.**") and words in rendered(shown)


def test_8_deep_json_is_refused_before_parsing(tmp_path_factory, tmp_path):
    folder = tmp_path / "deep"
    shutil.copytree(tiny_checkpoint(tmp_path_factory, onnx=False), folder)
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ServiceError, match="nests more than 32 levels"):
        DiffusionService(folder).checkpoint()


# 9. logs, token masking, the seed -----------------------------------------------------------------

def test_9_a_rejected_input_is_one_log_line_and_one_character_tokens_garble_nothing(caplog):
    from webapp.events import shown_in_page
    from webapp.text import mask_token
    import gradio as gr
    with caplog.at_level(logging.INFO, logger="diffusion_toolkit.app"):
        with pytest.raises(gr.Error):
            with shown_in_page():
                raise ServiceError("seed must be a whole number, got 1.5")
    assert [r.getMessage() for r in caplog.records] == ["rejected: seed must be a whole number, got 1.5"]
    assert mask_token("a repo was not found", "a") == "a repo was not found"
    assert mask_token("token hf_abcdefghij refused", "hf_abcdefghij") == "token *** refused"
    from diffusion_core.hub import _scrub
    assert _scrub("a b c", "a") == "a b c"


def test_9_the_seed_rejects_fractions(tmp_path_factory):
    service = DiffusionService(tiny_checkpoint(tmp_path_factory, onnx=False))
    with pytest.raises(ServiceError, match="seed must be a whole number, got 1.5"):
        service.generate("pytorch", "ddim", 3, 0.0, 1.5, 1)
