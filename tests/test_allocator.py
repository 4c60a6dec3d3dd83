"""diffusion_core.allocator: glibc keeps big buffers after tune_allocator(), and a user's choice wins.

Each case runs in a fresh process: mallopt settings last for the life of a process, and the
page-fault count (ru_minflt) is per process.
"""
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="mallopt tuning applies to glibc on Linux only")

# As a forward does: allocate a layer's worth of 4 MiB activations, free them all, again. By default
# glibc trims the freed heap top back to the kernel each time (its dynamic trim threshold is twice
# the largest freed mmapped chunk), so every round faults its pages in afresh.
CHILD = """
import json, resource, sys
sys.path.insert(0, {root!r})
import numpy as np
from diffusion_core.allocator import tune_allocator
state = tune_allocator() if {tune} else "not called"
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    buffers = [np.ones(1 << 20, dtype=np.float32) for _ in range(8)]
    del buffers
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({{"state": state, "faults": faults}}))
"""


def run_child(tune: bool, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD",
                                                          "DIFFUSION_TOOLKIT_MALLOC")}
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), tune=tune)],
                         env={**environ, **env}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_tuning_stops_the_remapping_of_big_buffers():
    default, tuned = run_child(False), run_child(True)
    assert tuned["state"].startswith("tuned"), tuned
    # ~40 x 8 x 1024 pages by default (about half measured: most rounds faulted afresh); ~8 x 1024 once when kept
    assert default["faults"] > 40 * 8 * 1024 // 4, default
    assert tuned["faults"] < default["faults"] / 10, (default, tuned)


def test_a_users_setting_wins():
    assert run_child(True, MALLOC_MMAP_THRESHOLD_="131072")["state"].startswith("unchanged: the user set")
    assert run_child(True, DIFFUSION_TOOLKIT_MALLOC="default")["state"].startswith("unchanged")


def test_load_model_tunes_the_process():
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from diffusion_core.allocator import allocator_state\n"
            "import backends\n"
            "try:\n    backends.load_model('no-such-backend', None)\nexcept Exception:\n    pass\n"
            "print(allocator_state())" % str(ROOT))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().startswith("tuned"), out.stdout + out.stderr
