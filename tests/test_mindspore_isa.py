"""ONEDNN_MAX_CPU_ISA=AVX2 is set for MindSpore's first operation only, so MindSpore's convolutions
stay fast on AVX-512/AMX CPUs and PyTorch's are not slowed down by the same variable.

Each timing runs in a fresh process (both libraries read the variable once), single-threaded:
the ISA decides which kernel runs, and one thread per library keeps the timings of a shared
two-core machine from measuring its other tenants. On a CPU without AVX-512 the variable changes
nothing and the test checks only that nothing got slower.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mindspore", reason="the oneDNN ISA pinning is MindSpore's; mindspore missing")
pytest.importorskip("torch", reason="the mixed-process timing needs torch installed")

REPO = Path(__file__).resolve().parents[1]
SLACK = 3.0  # generous: the machine is shared, and a wrong ISA costs ~40x, not 3x

SCRIPT = r"""
import json, os, sys, time
import numpy as np
which = sys.argv[1].split(",")

def best(run, repeats=7):
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter(); run(); times.append(time.perf_counter() - start)
    return min(times)

x = np.random.default_rng(0).standard_normal((16, 32, 28, 28), dtype=np.float32)
w = np.random.default_rng(1).standard_normal((32, 32, 3, 3), dtype=np.float32)
out = {}
if "torch" in which:
    import torch
    torch.set_num_threads(1)
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    torch_conv = lambda: torch.nn.functional.conv2d(tx, tw, padding=1)
    torch_conv()                                  # torch's first operation, before MindSpore's
if "mindspore" in which:
    import backends.mindspore as bm
    bm.prepare(num_threads=1)
    out["variable_after_prepare"] = os.environ.get("ONEDNN_MAX_CPU_ISA")
    import mindspore as ms
    from mindspore import ops
    mx, mw = ms.Tensor(x), ms.Tensor(w)
    out["mindspore"] = best(lambda: ops.conv2d(mx, mw, pad_mode="pad", padding=1).asnumpy())
if "torch" in which:
    out["torch"] = best(torch_conv)
print(json.dumps(out))
"""


def _timings(which: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    result = subprocess.run([sys.executable, "-c", SCRIPT, which], capture_output=True, text=True,
                            cwd=REPO, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_both_frameworks_stay_fast_in_one_process():
    torch_alone = _timings("torch")["torch"]
    mindspore_alone = _timings("mindspore")
    together = _timings("torch,mindspore")
    assert mindspore_alone["variable_after_prepare"] is None  # put back for libraries loaded later
    assert together["torch"] < SLACK * torch_alone, (together, torch_alone)
    assert together["mindspore"] < SLACK * mindspore_alone["mindspore"], (together, mindspore_alone)
