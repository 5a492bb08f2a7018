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


def wait_for_checkpoint(
    run_dir, step: int, *, still_going=lambda: True, timeout: float = 240, every: float = 0.05
) -> bool:
    """Poll ``run_dir/checkpoint/state.json`` until the run's checkpoint has reached ``step``; False
    on timeout or once ``still_going()`` is False. A file, polled often: evidence that the training
    loop is under way that comes as soon as the checkpoint is written, however loaded the machine
    (the store's rows may come later, and a poll may find the store locked by its writer)."""
    import json
    from pathlib import Path

    state = Path(run_dir) / "checkpoint" / "state.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and still_going():
        try:
            if json.loads(state.read_text())["step"] >= step:
                return True
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(every)
    return False
