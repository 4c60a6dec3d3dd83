"""Data-parallel MindSpore training under MindSpore's launcher, msrun (the counterpart of torchrun).

    msrun --worker_num 2 --local_worker_num 2 --master_port 8118 --join True --log_dir logs \\
        backends/mindspore/launch.py --data digits ...

msrun starts a scheduler and the workers, each running the script with MS_WORKER_NUM and its own
rank in the environment; `mindspore.communication.init()` joins them (on CPU through MindSpore's
"mccl" collectives). Without msrun this is one process and every helper here is a no-op.

What MindSpore 2.10 offers on CPU decides the shapes below (probed on this project's machines):
AllReduce works for float sums only (no max, no integers), AllGather and Broadcast work, and the
functional `comm_func` API does not. So gradients are averaged by one float32 AllReduce of the flat
gradient vector inside the update graph (train_step.WeightUpdate), flags and JSON travel as
float32 vectors, and every rank ends with a collective (teardown) so that none exits while
another still sends.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np


class ReplicasDiverged(RuntimeError):
    """Data-parallel processes ended with different weights: a bug, never expected."""


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_world_size() -> int:
    """The number of workers msrun started (1 when not under msrun)."""
    try:
        return max(1, int(os.environ.get("MS_WORKER_NUM", "1")))
    except ValueError:
        return 1


def setup() -> Dist:
    """Join the workers msrun started; call after prepare() and before any other MindSpore work."""
    if launched_world_size() <= 1:
        return Dist()
    from mindspore.communication import get_group_size, get_rank, init
    init()  # the scheduler process msrun also starts never returns from here
    return Dist(get_rank(), get_group_size())


class Collectives:
    """The few collectives the trainer needs, spelled with what MindSpore 2.10 runs on CPU."""

    def __init__(self, info: Dist):
        self.info = info
        if info.enabled:
            from mindspore import ops
            self._sum, self._gather = ops.AllReduce(), ops.AllGather()

    def mean(self, value: float) -> float:
        if not self.info.enabled:
            return value
        import mindspore as ms
        total = self._sum(ms.Tensor(np.array([value], np.float32))).asnumpy()[0]
        return float(total) / self.info.world_size

    def all_true(self, flag: bool) -> bool:
        """Whether flag holds on every rank (float16 overflow: one skips, all skip)."""
        return self.mean(1.0 if flag else 0.0) == 1.0 if self.info.enabled else flag

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's JSON-able obj, in rank order: bytes as float32 values (exact to 255)."""
        if not self.info.enabled:
            return [obj]
        import mindspore as ms
        data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
        lengths = self._gather(ms.Tensor(np.array([len(data)], np.float32))).asnumpy().astype(int)
        padded = np.zeros(int(lengths.max()), np.float32)
        padded[:len(data)] = data
        rows = self._gather(ms.Tensor(padded.reshape(1, -1))).asnumpy().astype(np.uint8)
        return [json.loads(row[:n].tobytes().decode()) for row, n in zip(rows, lengths)]

    def check_replicas(self, weights: dict[str, np.ndarray]) -> str:
        """sha256 of the weights, identical on every rank or ReplicasDiverged."""
        h = hashlib.sha256()
        for name in sorted(weights):
            h.update(name.encode())
            h.update(np.ascontiguousarray(weights[name], np.float32).tobytes())
        digests = self.gather(h.hexdigest())
        if len(set(digests)) != 1:
            raise ReplicasDiverged("data-parallel replicas diverged: parameter digests per rank "
                                   + ", ".join(f"{r}: {d[:12]}" for r, d in enumerate(digests)))
        return digests[0]

    def barrier(self) -> None:
        self.mean(0.0)
