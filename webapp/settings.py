"""The server's settings: limits that keep a public Space usable by every stranger at once.

Each is an environment variable (what a Space's settings page sets) and a flag of app.py, with a
default safe for a 2-vCPU Space with 16 GB of memory. README "Running a public Space" lists them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional


class ServiceError(ValueError):
    """A request that cannot be served; the message says what was wrong and what to do."""


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ServiceError(f"environment variable {name}={value!r} is not a whole number") from None


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise ServiceError(f"environment variable {name}={value!r} is not a number") from None


def env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ServiceError(f"environment variable {name}={value!r} must be 1/0, true/false, yes/no or on/off")


@dataclass(frozen=True)
class Setting:
    env: str
    help: str


@dataclass(frozen=True)
class ServerSettings:
    """Limits per request and per server; the defaults suit a 2-vCPU, 16 GB Space."""

    max_batch: int = 64               # images per request
    # One intra-op thread per request: the models are small (28x28), so a second thread mostly
    # waits; measured on a 2-core machine with the other core busy, 2 threads were ~10x slower.
    torch_threads: int = 1
    concurrency: int = 2              # sampling requests at once, all tabs together; the rest queue
    time_limit_s: float = 120.0       # wall clock per request; a longer one is stopped at its next step
    max_tflop: float = 2.0            # model compute per request: evaluations x images x FLOPs/image
    memory_budget_mb: int = 2048      # peak activations of one request's forward
    max_download_mb: int = 200        # the checkpoint files a pull may fetch
    max_upload_mb: int = 5            # an uploaded image
    hub_keep: int = 20                # pulled checkpoints kept on disk (least recently used go)
    allow_pull: bool = True           # visitors may pull a model into their own session
    hub_allow: str = ""               # comma-separated repo ids or 'owner/*' a pull may fetch ('' = any)
    allow_secret_push: bool = False   # pushing with the server's HF_TOKEN (else only typed tokens)

    ENV = {
        "max_batch": Setting("DIFFUSION_MAX_BATCH", "most images per request"),
        "torch_threads": Setting("DIFFUSION_TORCH_THREADS", "PyTorch intra-op threads"),
        "concurrency": Setting("DIFFUSION_CONCURRENCY", "sampling requests at once, every tab together"),
        "time_limit_s": Setting("DIFFUSION_TIME_LIMIT", "seconds a request may run before it is stopped"),
        "max_tflop": Setting("DIFFUSION_MAX_TFLOP", "model compute per request, in TFLOP"),
        "memory_budget_mb": Setting("DIFFUSION_MEMORY_BUDGET_MB", "peak activation memory per request, MB"),
        "max_download_mb": Setting("DIFFUSION_MAX_DOWNLOAD_MB", "most MB a Hub pull may download"),
        "max_upload_mb": Setting("DIFFUSION_MAX_UPLOAD_MB", "largest uploaded image, MB"),
        "hub_keep": Setting("DIFFUSION_HUB_KEEP", "pulled checkpoints kept on disk"),
        "allow_pull": Setting("DIFFUSION_ALLOW_PULL", "whether visitors may pull models (into their session)"),
        "hub_allow": Setting("DIFFUSION_HUB_ALLOW", "repo ids (or owner/*) a pull may fetch; empty: any"),
        "allow_secret_push": Setting("DIFFUSION_ALLOW_SECRET_PUSH", "whether a push may use the server's HF_TOKEN"),
    }

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
                raise ServiceError(f"{self.ENV[f.name].env} must be positive, got {value}")

    @classmethod
    def from_env(cls, **overrides) -> "ServerSettings":
        """Defaults, then the environment, then explicit overrides (flags); None overrides nothing."""
        values = {}
        for f in fields(cls):
            env, default = cls.ENV[f.name].env, f.default
            if isinstance(default, bool):
                values[f.name] = env_flag(env, default)
            elif isinstance(default, int):
                values[f.name] = env_int(env, default)
            elif isinstance(default, float):
                values[f.name] = env_float(env, default)
            else:
                values[f.name] = os.environ.get(env, default)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def allows_repo(self, repo_id: str) -> bool:
        allowed = [item.strip() for item in self.hub_allow.split(",") if item.strip()]
        if not allowed:
            return True
        owner = repo_id.split("/", 1)[0]
        return any(item == repo_id or item == f"{owner}/*" for item in allowed)


def model_dir_from_env() -> Optional[Path]:
    folder = os.environ.get("DIFFUSION_MODEL_DIR")
    return Path(folder).expanduser() if folder else None
