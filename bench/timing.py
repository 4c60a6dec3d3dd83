"""The one way the benchmarks time a call: the median of repeated wall-clock runs."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def timed(run: Callable[[], object], repeats: int, warmup: bool = False) -> float:
    """Median seconds of `repeats` calls of run() (each must finish its work before returning);
    with `warmup`, one untimed call first (allocations, compiled graphs, oneDNN primitives)."""
    if warmup:
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
