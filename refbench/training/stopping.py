"""How a run stops early: Ctrl-C / SIGTERM at a step boundary, or too many non-finite steps."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

__all__ = ["TrainingInterrupted", "TrainingDiverged", "stop_requests", "stop_on_sigterm_only"]

_STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM]  # the signals a run takes as a stop request


class TrainingInterrupted(Exception):
    """Raised at a step boundary after Ctrl-C / SIGTERM, once the checkpoint is saved."""


class TrainingDiverged(Exception):
    """Raised at a step boundary once ``training.max_nonfinite_steps`` steps had a non-finite loss
    or gradient (none of them reached the weights); the metrics logged so far are flushed."""


@contextmanager
def stop_requests():
    """Turn Ctrl-C and SIGTERM into a flag the loop reads between steps, so a stop never
    lands half-way through an optimizer step (whose state would then not match its count)."""
    requested = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def handler(signum, frame):
        if requested["stop"]:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        requested["stop"] = True

    previous = {sig: signal.signal(sig, handler) for sig in _STOP_SIGNALS}
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def stop_on_sigterm_only() -> None:
    """For a process whose parent forwards stops (a plan worker): ignore SIGINT, stop on SIGTERM.
    Ctrl-C at a terminal reaches the whole process group; counted here as well, the parent's
    SIGTERM would be a second request, which stops at once without a checkpoint."""
    _STOP_SIGNALS[:] = [signal.SIGTERM]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
