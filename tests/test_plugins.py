"""A third-party backend, installed the way a package is (a .dist-info with an entry point in the
group diffusion_toolkit.backends), appears beside the built-ins: in list_backends(), in the app's
dropdown and in the Compare tab, where it samples like any other."""
from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

pytest.importorskip("torch", reason="the toy plugin runs its models on PyTorch")

from test_app_service import tiny_checkpoint  # noqa: E402

PLUGIN = textwrap.dedent('''
    """A toy backend: the PyTorch backend under another name, as a plugin would ship one."""
    from backends.pytorch.backend import PyTorchBackend

    class ToyBackend(PyTorchBackend):
        name = "toy"
        title = "Toy plugin"
''')


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "toy_backend").mkdir(parents=True)
    (site / "toy_backend" / "__init__.py").write_text(PLUGIN)
    info = site / "toy_backend-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-backend\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[diffusion_toolkit.backends]\ntoy = toy_backend:ToyBackend\n")
    (info / "RECORD").write_text("")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield
    sys.modules.pop("toy_backend", None)


def test_the_plugin_is_listed_and_loads(installed_plugin, tmp_path_factory):
    from backends import backend_names, list_backends, load_model
    assert backend_names()[:3] == ["pytorch", "mindspore", "onnxruntime"] and "toy" in backend_names()
    folder = tiny_checkpoint(tmp_path_factory, onnx=False)
    status = {s.name: s for s in list_backends(folder)}["toy"]
    assert status.available and status.title == "Toy plugin"
    images = load_model("toy", folder, device="cpu").sample(batch_size=2, steps=3, seed=0)
    want = load_model("pytorch", folder, device="cpu").sample(batch_size=2, steps=3, seed=0)
    assert (images == want).all()


def test_the_plugin_is_in_the_page_and_the_compare_tab(installed_plugin, tmp_path_factory):
    import app
    from webapp import DiffusionService
    service = DiffusionService(tiny_checkpoint(tmp_path_factory, onnx=False))
    demo = app.build_demo(service)
    dropdown = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "backend")
    assert ("Toy plugin", "toy") in [tuple(c) for c in dropdown.choices]
    result = service.compare(["toy"], "ddim", 3, 0, 2, "pytorch")
    assert [r.name for r in result.runs] == ["pytorch", "toy"] and result.runs[1].max_abs_diff == 0.0
