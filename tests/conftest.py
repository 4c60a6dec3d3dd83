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
