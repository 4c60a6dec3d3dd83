"""The package as a new user gets it: a wheel holding the three packages and the shipped model,
installed with the [onnx] extra into a fresh virtual environment outside the repository: no torch,
no MindSpore, and the README's pipeline example runs from another folder and writes PNGs."""
from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
EXAMPLE = """
from backends import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained(backend="onnxruntime")
garments = pipe(4, sampler="dpmpp_2m", steps=5, seed=0, progress=False)
for i, garment in enumerate(garments):
    garment.save(f"garment{i}.png")
import sys
print(sorted(m for m in ("torch", "mindspore") if m in sys.modules))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(out), str(REPO)], check=True, capture_output=True, timeout=600)
    for leftover in ("build", "diffusion_toolkit.egg-info"):  # what setuptools leaves in the clone
        subprocess.run(["rm", "-rf", str(REPO / leftover)], check=False)
    return next(out.glob("diffusion_toolkit-*.whl"))


def test_the_wheel_holds_three_packages_the_model_and_the_entry_points(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {
        "diffusion_core", "backends", "webapp"}
    assert "diffusion_core/models/default/model.safetensors" in names
    assert "diffusion_core/quality/fashion_classifier.safetensors" in names
    info = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(info).decode()
    assert "diffusion-toolkit = diffusion_core.cli:main" in text and "pytorch = backends.builtin:PYTORCH" in text


def test_onnx_extra_in_a_fresh_environment_runs_the_readme_example(wheel, tmp_path):
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"{wheel}[onnx]", "numpy==1.26.4"], check=True,
                   capture_output=True, timeout=1200)
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                            check=True).stdout.lower()
    assert "torch" not in listed and "mindspore" not in listed and "onnxruntime" in listed
    work = tmp_path / "elsewhere"
    work.mkdir()
    done = subprocess.run([str(python), "-c", EXAMPLE], cwd=work, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
    assert sorted(p.name for p in work.glob("*.png")) == [f"garment{i}.png" for i in range(4)]
    help_text = subprocess.run([str(env_dir / "bin" / "diffusion-toolkit"), "sample", "--help"],
                               capture_output=True, text=True, check=True).stdout
    assert "--guidance-scale" in help_text and "(default: 1.0)" in help_text
