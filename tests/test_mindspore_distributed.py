"""MindSpore data parallel under msrun, through the shared training loop: two processes on one
machine (MindSpore's CPU collectives), identical replicas, an exact resume with two ranks."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mindspore", reason="MindSpore data parallel needs mindspore")
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TINY = ["--data", "digits", "--image-size", "8", "--dim", "8", "--dim-mults", "1,2", "--groups", "4",
        "--batch-size", "8", "--sample-steps", "3", "--device", "cpu", "--sample-every", "0",
        "--log-every", "1", "--checkpoint-every", "0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def msrun(out: Path, *flags: str) -> subprocess.CompletedProcess:
    msrun_bin = Path(sys.executable).parent / "msrun"
    if not msrun_bin.exists():
        pytest.skip(f"MindSpore's launcher is not at {msrun_bin}")
    # msrun starts its workers with the `python` on PATH: this interpreter's environment
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           "GLOG_v": "3", "PYTHONPATH": str(REPO)}
    logs = out.parent / f"logs-{len(list(out.parent.glob('logs-*')))}"
    command = [str(msrun_bin), "--worker_num", "2", "--local_worker_num", "2", "--master_port",
               str(free_port()), "--join", "True", "--cluster_time_out", "120", "--log_dir", str(logs),
               str(REPO / "backends" / "mindspore" / "launch.py"), *TINY, "--out", str(out), *flags]
    done = subprocess.run(command, cwd=out.parent, env=env, capture_output=True, text=True, timeout=400)
    done.logs = "".join(p.read_text(errors="replace") for p in sorted(logs.glob("worker_*.log")))
    return done


def state(out: Path) -> dict:
    from safetensors.numpy import load_file
    return load_file(str(out / "training_state.safetensors"))


def test_two_workers_train_identical_replicas_and_resume_exactly(tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    first = msrun(whole, "--steps", "4")
    assert first.returncode == 0, first.stdout[-2000:] + first.logs[-3000:]
    assert "all 2 replicas hold identical weights" in first.logs
    notes = json.loads((whole / "model" / "config.json").read_text())["notes"]
    assert notes["global_batch"] == 16 and notes["training_command"].startswith("msrun --worker_num 2")
    assert len((whole / "train_log.jsonl").read_text().splitlines()) == 4  # rank 0 writes alone
    for flags in (("--steps", "2"), ("--steps", "4", "--resume")):
        done = msrun(split, *flags)
        assert done.returncode == 0, done.stdout[-2000:] + done.logs[-3000:]
    a, b = state(whole), state(split)
    assert sorted(a) == sorted(b)
    for name in a:  # weights, EMA, AdamW moments: bitwise equal after a resume with two ranks
        assert np.array_equal(a[name], b[name]), name
