"""A kill -9 at every stage of training's final save and of the ONNX export, then the documented
command (`--resume`, or the export again), always ends with a complete, current model/."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the trainer and the exporter need torch")
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
KILLER = Path(__file__).resolve().parent / "kill_at.py"
TINY = ["--data", "digits", "--image-size", "8", "--dim", "8", "--dim-mults", "1,2", "--groups", "4",
        "--batch-size", "8", "--num-threads", "1", "--sample-steps", "2", "--device", "cpu",
        "--sample-every", "0", "--checkpoint-every", "0", "--log-every", "1"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def run(kill_at: int, module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(KILLER), str(kill_at), module, *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)


def operations(done: subprocess.CompletedProcess) -> int:
    return int(re.search(r"durable operations: (\d+)", done.stderr).group(1))


def assert_complete_and_current(out: Path, steps: int) -> None:
    from diffusion_core.checkpoint import load_checkpoint
    checkpoint = load_checkpoint(out / "model")
    assert checkpoint.config.notes["steps"] == steps
    assert not [p.name for p in out.iterdir() if ".incoming-" in p.name or ".previous-" in p.name]
    state = json.loads(__import__("safetensors").safe_open(str(out / "training_state.safetensors"),
                                                           "numpy").metadata()["state"])
    assert state["step"] == steps


def test_a_kill_at_every_stage_of_the_final_save_is_repaired_by_resume(tmp_path):
    train = "backends.pytorch.train"
    base = tmp_path / "base"
    assert run(0, train, *TINY, "--steps", "2", "--out", str(base)).returncode == 0
    probe = tmp_path / "probe"
    subprocess.run(["cp", "-r", str(base), str(probe)], check=True)
    total = operations(run(0, train, *TINY, "--steps", "3", "--resume", "--out", str(probe)))
    assert total >= 8  # the state file, the grid, the staging files, two renames, the cleanup
    for k in range(1, total + 1):
        out = tmp_path / f"k{k}"
        subprocess.run(["cp", "-r", str(base), str(out)], check=True)
        killed = run(k, train, *TINY, "--steps", "3", "--resume", "--out", str(out))
        assert killed.returncode == 137, (k, killed.stderr[-2000:])
        again = run(0, train, *TINY, "--steps", "3", "--resume", "--out", str(out))
        assert again.returncode == 0, (k, again.stderr[-2000:])
        assert_complete_and_current(out, 3)


def test_a_kill_during_the_onnx_export_never_blocks_a_later_save(tmp_path):
    pytest.importorskip("onnxscript", reason="torch's ONNX exporter needs onnxscript")
    train, export = "backends.pytorch.train", "backends.onnx.export"
    out = tmp_path / "run"
    assert run(0, train, *TINY, "--steps", "2", "--out", str(out)).returncode == 0
    total = operations(run(0, export, str(out / "model"), "--no-verify"))
    for k in range(1, total + 1):
        killed = run(k, export, str(out / "model"), "--no-verify")
        assert killed.returncode == 137, (k, killed.stderr[-2000:])
        assert run(0, export, str(out / "model"), "--no-verify").returncode == 0, k
        from backends import load_model
        assert load_model("onnxruntime", out / "model").sample(batch_size=1, steps=2, seed=0).shape == (1, 1, 8, 8)
    # and the trainer's next save into the same folder is not refused
    assert run(0, train, *TINY, "--steps", "3", "--resume", "--out", str(out)).returncode == 0
    assert_complete_and_current(out, 3)
