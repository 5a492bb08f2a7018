"""How a run stops early: Ctrl-C / SIGTERM at a step boundary, or too many non-finite steps."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

__all__ = ["TrainingInterrupted", "TrainingDiverged", "stop_requests"]


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

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
