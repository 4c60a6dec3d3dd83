"""Data-parallel training under `torchrun`: process group, device per rank, replica checks.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them this is a single process and every
helper here degrades to a no-op. gloo on CPU, NCCL on GPU. Each rank trains on its own disjoint
shard of every batch; DistributedDataParallel averages the gradients, so the replicas stay equal.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from diffusion_core.config import ConfigError


class ReplicasDiverged(RuntimeError):
    """Data-parallel processes ended with different weights: a bug, never expected."""


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files and shows a progress bar."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(flag: str, local_rank: int = 0) -> torch.device:
    """'auto' -> cuda (this rank's GPU under torchrun) when PyTorch sees one, else cpu."""
    if flag == "auto":
        flag = "cuda" if torch.cuda.is_available() else "cpu"
    if flag.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {flag}: PyTorch sees no CUDA GPU here; use --device cpu")
        if flag == "cuda":
            flag = f"cuda:{local_rank}"
    elif flag != "cpu":
        raise ConfigError(f"--device {flag!r}: use auto, cpu, cuda or cuda:N")
    return torch.device(flag)


def setup(device_flag: str) -> tuple[Dist, torch.device]:
    """Join the process group when launched by torchrun; returns the rank info and its device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist(), pick_device(device_flag)
    info = Dist(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    device = pick_device(device_flag, info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info, device


def teardown(info: Dist) -> None:
    if info.enabled and dist.is_initialized():
        # all ranks leave together: a gloo rank that tears down while its peer is still sending
        # aborted once under load ("terminate called without an active exception", exit -6)
        dist.barrier()
        dist.destroy_process_group()


def gather(info: Dist, obj: Any) -> list[Any]:
    """Every rank's obj, in rank order (for RNG states that rank 0 saves)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def parameter_digest(module: nn.Module) -> str:
    """SHA-256 of every parameter's bytes in order: equal digests mean bitwise-equal replicas."""
    h = hashlib.sha256()
    for name, p in module.named_parameters():
        h.update(name.encode())
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def check_replicas(info: Dist, module: nn.Module) -> str:
    """Fail loudly unless every rank holds bitwise the same weights; returns the digest."""
    digest = parameter_digest(module)
    digests = gather(info, digest)
    if len(set(digests)) != 1:
        raise ReplicasDiverged("data-parallel replicas diverged: parameter digests per rank "
                           + ", ".join(f"{r}: {d[:12]}" for r, d in enumerate(digests)))
    return digest
