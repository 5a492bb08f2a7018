"""Waiting, in a test, for a run trained by another process to reach a step."""

import time

from refbench.store import Store


def wait_for_steps(
    db, run: str, steps: int, *, still_going=lambda: True, timeout: float = 240, every: float = 0.3
) -> bool:
    """Poll the store until ``run`` has ``steps`` train_metrics rows; False on timeout or once
    ``still_going()`` is False. A store not created yet, or locked by its writer this instant, is
    polled again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and still_going():
        time.sleep(every)
        try:
            logged = Store(db, lock_timeout=1).query("select count(*) as n from train_metrics where run = ?", [run])[
                "n"
            ][0]
        except Exception:
            continue
        if logged >= steps:
            return True
    return False
