"""How many threads a framework should use by default: leave one core to everything else.

Measured on this project's 2-core machines (bench/threads.py, batch 16, 10 DPM-Solver++ steps of
the default model on PyTorch): with the other core busy (a training run), 2 threads took 45.6 s
against 1.50 s for one thread, 30x slower, because an OpenMP team waits at every operator for the
thread that has no core. So the default is every usable core but one, and at least one; on 2
cores that is 1. A user's own choice (torch.set_num_threads, OMP_NUM_THREADS, --num-threads)
always wins.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def usable_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup (container) CPU quota."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(allowed, _cgroup_cpu_quota() or allowed))


def _cgroup_cpu_quota() -> Optional[int]:
    """CPUs granted by a cgroup v2 quota (docker --cpus, Kubernetes limits), rounded up."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else max(1, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        return None


def default_threads(processes: int = 1) -> int:
    """Threads per process when `processes` share the machine: (cores - 1) // processes, >= 1."""
    return max(1, (usable_cores() - 1) // max(1, processes))


def user_chose_threads() -> bool:
    return bool(os.environ.get("OMP_NUM_THREADS", "").strip())
