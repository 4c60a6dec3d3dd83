"""A cancel token a sampling call checks between steps, so an abandoned or over-long request
stops within one step instead of holding a worker to the end.

The caller keeps the token and may cancel it from any thread; a deadline makes it cancel itself.
Samplers never see it: SamplerContext.report, which every sampler calls after each step, checks it.
"""
from __future__ import annotations

import threading
import time
from typing import Optional


class Cancelled(RuntimeError):
    """The sampling call was stopped; the message says why (a cancel, a disconnect, a time limit)."""


class CancelToken:
    def __init__(self, deadline_seconds: Optional[float] = None):
        self._event = threading.Event()
        self._reason = "the request was cancelled"
        self._deadline = None if deadline_seconds is None else time.monotonic() + float(deadline_seconds)
        self._limit = deadline_seconds

    def cancel(self, reason: str = "the request was cancelled") -> None:
        if not self._event.is_set():
            self._reason = reason
            self._event.set()

    @property
    def cancelled(self) -> bool:
        if not self._event.is_set() and self._deadline is not None and time.monotonic() > self._deadline:
            self.cancel(f"the request ran past this server's time limit of {self._limit:g} s; ask for "
                        "fewer images or steps")
        return self._event.is_set()

    def check(self) -> None:
        """Raise Cancelled if the token was cancelled or its deadline has passed."""
        if self.cancelled:
            raise Cancelled(self._reason)
