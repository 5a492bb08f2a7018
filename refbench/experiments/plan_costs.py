"""Where a plan's wall time went: training, sampling, scoring, analysis, and everything else.

``split_seconds`` takes what the workers measured (each run's seconds per step and its wall time
from hand-off to result, ``run_specs``'s ``timings``) and the trainer's own clock (``run_costs``,
kind 'total': the training loop, without loading the model and data). "Other" is what is left of
the runs' wall time once those four are taken out: worker start-up and imports (inside a worker's
first run), loading models and data, writing the store. "Idle" is the rest of the workers' time
(wall x workers): a worker waiting for the last runs to finish, or for its next run.
"""

from __future__ import annotations

from .steps import STEP_KINDS

__all__ = ["split_seconds", "KINDS"]

KINDS = tuple(STEP_KINDS.values())  # training, sampling, scoring, analysis


def split_seconds(timings: dict[str, dict], training_loop: dict[str, float], *, wall: float, workers: int) -> dict:
    """Per run: {training, sampling, scoring, analysis, wall}; plus totals, 'other' (per run too) and 'idle'.

    ``timings``: run -> {step command: seconds, 'wall': seconds}; ``training_loop``: run -> the
    trainer's seconds (runs not trained this time have none and count no training)."""
    runs = {}
    for run, seconds in timings.items():
        row = dict.fromkeys(KINDS, 0.0)
        row["training"] = float(training_loop.get(run, 0.0)) if "train" in seconds else 0.0
        for command, kind in STEP_KINDS.items():
            if command != "train":  # the train step also loads the model and data: the trainer's clock is training
                row[kind] += seconds.get(command, 0.0)
        row["wall"] = seconds.get("wall", 0.0)
        runs[run] = row
    totals = {kind: sum(row[kind] for row in runs.values()) for kind in KINDS}
    busy = sum(row["wall"] for row in runs.values())
    other = busy - sum(totals.values())
    idle = wall * min(workers, max(1, len(runs))) - busy
    return {
        "runs": runs,
        "totals": totals,
        "other": other,
        "other_per_run": other / max(1, len(runs)),
        "idle": idle,
        "wall": wall,
        "workers": workers,
    }
