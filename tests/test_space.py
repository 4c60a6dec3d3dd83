"""The Space: the folder the script assembles, and its upload to (and download from) the Hub."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import build_space  # noqa: E402


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and ".cache" not in p.parts}


def test_the_space_folder_runs_app_py_with_the_cpu_torch(tmp_path):
    folder = build_space.build(tmp_path / "space")
    names = {p.name for p in folder.iterdir()}
    assert {"app.py", "diffusion_core", "backends", "webapp", "models", "README.md", "requirements.txt",
            ".gitattributes"} <= names and "tests" not in names
    requirements = (folder / "requirements.txt").read_text()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in requirements
    assert "torch==2.13.0+cpu" in requirements and "mindspore" not in requirements
    front = (folder / "README.md").read_text().split("---")[1]
    assert "sdk: gradio" in front and "app_file: app.py" in front
    assert "*.safetensors filter=lfs" in (folder / ".gitattributes").read_text()
    assert (folder / "models" / "default" / "model.safetensors").is_file()
    assert not list(folder.rglob("__pycache__"))


def test_the_upload_round_trips_through_the_hub(tmp_path, hub_server):
    from huggingface_hub import snapshot_download
    folder = build_space.build(tmp_path / "space")
    url = build_space.upload(folder, "tester/demo-space", token=hub_server.token, endpoint=hub_server.endpoint)
    assert url.startswith(hub_server.endpoint)
    back = Path(snapshot_download("tester/demo-space", repo_type="space", endpoint=hub_server.endpoint,
                                  token=hub_server.token, cache_dir=tmp_path / "cache"))
    assert digests(back) == digests(folder)
