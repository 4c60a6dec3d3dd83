"""Running a service call for the page: errors as messages, and cancellation that reaches the model.

Gradio runs a plain function in a worker thread, and cancelling the event (the Stop of a client,
a closed tab) only stops waiting for it: the thread would sample on to the end. So each sampling
call gets a CancelToken that the core checks after every step, and `run_cancellable` cancels it
when the event is cancelled (asyncio cancels this coroutine), when the visitor's connection is
gone (Gradio marks the event not alive), or when the server's time limit passes.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Callable

import gradio as gr

from diffusion_core.cancel import CancelToken

POLL_SECONDS = 0.25
log = logging.getLogger("diffusion_toolkit.app")


@contextlib.contextmanager
def shown_in_page():
    """Turn the service's errors (each says what was wrong and what to do) into a message in the
    page, logged as one line; anything else is a bug and Gradio reports it as such."""
    try:
        yield
    except ValueError as error:   # ServiceError, and the core's ConfigError / CheckpointError
        log.info("rejected: %s", error)
        raise gr.Error(str(error), print_exception=False) from None
    except MemoryError:
        raise gr.Error("the server ran out of memory for this request; ask for fewer images",
                       print_exception=False) from None


def visitor_gone(demo: gr.Blocks, request: Any) -> bool:
    """Whether Gradio has given up on this visitor's events (the page was closed or reloaded)."""
    session = getattr(request, "session_hash", None)
    queue = getattr(demo, "_queue", None)
    if session is None or queue is None:
        return False
    for job in getattr(queue, "active_jobs", []) or []:
        for event in job or []:
            if getattr(event, "session_hash", None) == session and not getattr(event, "alive", True):
                return True
    return False


async def run_cancellable(demo: gr.Blocks, request: Any, time_limit_s: float,
                          call: Callable[[CancelToken], Any]) -> Any:
    """call(token) in a worker thread; the token is cancelled as the module docstring says."""
    token = CancelToken(time_limit_s)
    loop = asyncio.get_running_loop()

    def work():
        with shown_in_page():
            return call(token)
    future = loop.run_in_executor(None, work)
    try:
        while True:
            done, _ = await asyncio.wait({future}, timeout=POLL_SECONDS)
            if done:
                return future.result()
            if visitor_gone(demo, request):
                token.cancel("the visitor left")
    except asyncio.CancelledError:
        token.cancel("the request was cancelled")
        raise
