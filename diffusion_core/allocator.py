"""glibc malloc settings for the toolkit's processes: keep big buffers instead of unmapping them.

By default glibc serves every allocation above a dynamic threshold (128 KiB at start, raised to at
most 32 MiB as buffers are freed) with its own mmap, and returns the memory to the kernel on free
(munmap, or trimming the heap top beyond 128 KiB). A Unet forward allocates and frees the same
multi-MiB activations at every layer of every step, so each one is mapped again and every page of
it faults in afresh: a 20-step batch-16 sample took ~200,000 page faults per call. Fixing the mmap
threshold at its maximum (32 MiB) and raising the trim threshold keeps those buffers in the heap,
where the next layer reuses them (bench/allocator.py measures it, with jemalloc/tcmalloc too).

The environment variables MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ / GLIBC_TUNABLES do the
same but glibc reads them only at process start; mallopt works at any time, for allocations made
afterwards. A user's own setting wins: nothing is changed when any of those variables is set, when
another allocator is preloaded (LD_PRELOAD), or when DIFFUSION_TOOLKIT_MALLOC=default.
Only the standard library is imported (diffusion_core never imports a framework).
"""
from __future__ import annotations

import ctypes
import os
import platform
from typing import Optional

# mallopt parameter numbers from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 << 20   # glibc's maximum on 64-bit (HEAP_MAX_SIZE / 2); larger is refused
TRIM_THRESHOLD = 256 << 20  # keep up to this much free memory at the heap top before trimming

OPT_OUT_ENV = "DIFFUSION_TOOLKIT_MALLOC"
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                  "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")

_state: Optional[str] = None  # why tune_allocator() did or did not act, once decided


def _skip_reason() -> Optional[str]:
    if os.environ.get(OPT_OUT_ENV, "").strip().lower() in ("default", "0", "off", "no"):
        return f"{OPT_OUT_ENV} asks for glibc's defaults"
    chosen = [name for name in _USER_SETTINGS if os.environ.get(name)]
    if chosen:
        return f"the user set {', '.join(chosen)}"
    if os.environ.get("LD_PRELOAD", "").strip():
        return "another allocator may be preloaded (LD_PRELOAD)"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "not glibc"
    return None


def tune_allocator() -> str:
    """Set glibc's mmap and trim thresholds once per process; returns what was done (or why not).
    Safe to call from every entry point: the app, the CLI, the trainers and load_model."""
    global _state
    if _state is not None:
        return _state
    reason = _skip_reason()
    if reason is None:
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):
            reason = "mallopt not found"
        else:
            mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
            # mallopt returns 1 on success, 0 on a refused value
            ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
            reason = None if ok else "mallopt refused the values"
    _state = (f"tuned: mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB"
              if reason is None else f"unchanged: {reason}")
    return _state


def allocator_state() -> Optional[str]:
    """What tune_allocator() decided in this process, or None if it was never called."""
    return _state
