"""Shared pytest fixtures."""
from __future__ import annotations

import pytest


@pytest.fixture
def hub_server(tmp_path_factory):
    """A fake Hugging Face Hub on 127.0.0.1 (tests/hub_server.py), stopped after the test.

    Pass `endpoint=hub_server.endpoint` and `token=hub_server.token` to push/pull; set
    `hub_server.cut_downloads_after = n` to break downloads mid-file; `hub_server.stop()` takes it
    off the network. Always give pull a fresh `cache_dir` so tests never touch ~/.cache.
    """
    from hub_server import FakeHub

    with FakeHub(tmp_path_factory.mktemp("fake_hub")) as hub:
        yield hub


# Markers by module, so that a new test in these files cannot miss them: the fast lane
# (-m "not slow and not browser") is what a contributor runs before every commit.
BROWSER_MODULES = {"test_app_browser", "test_app_browser_samplers"}
SLOW_MODULES = {"test_kill_during_export", "test_mindspore_distributed", "test_mindspore_train", "test_packaging",
                "test_space"}
# single tests over ~10 s in a full run on 2 cores (pytest --durations)
SLOW_TESTS = {"test_the_cifar10_sized_model_runs_like_diffusers_on_every_backend",
              "test_converted_forward_matches_theirs_on_every_backend",
              "test_the_app_pulls_a_diffusers_repo_by_id_and_compares_backends",
              "test_two_processes_under_torchrun", "test_every_backend_runs_it_like_diffusers",
              "test_export_is_one_checked_file_with_provenance",
              "test_their_checkpoint_runs_like_their_forward_on_every_backend",
              "test_mindspore_trains_it_through_the_same_loop",
              "test_compile_draws_the_eager_images_and_other_backends_refuse_it"}  # inductor: minutes


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rpartition(".")[2]
        if module in BROWSER_MODULES:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)
        if module in SLOW_MODULES or item.originalname in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        if "mindspore" in module:
            item.add_marker(pytest.mark.mindspore)
