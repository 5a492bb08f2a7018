"""Buffered writes of a run's metrics and reference events to the store.

Rows are kept in memory and written in one transaction every ``flush_seconds`` or when
asked (at checkpoints and at the end), so logging costs little per step; rows are keyed
by (run, step), so a resumed run that logs a step again replaces it rather than
duplicating it. Only the main process holds a RunLog that writes.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

from ..errors import StoreError
from ..store import Store


class RunLog:
    """``tracker``: a callable ``(values, step)`` (accelerate's ``Accelerator.log``) that gets
    every metric row and event as it is logged, for a live TensorBoard or W&B page; the store
    stays the source of truth."""

    def __init__(self, store: Store | None, run: str, *, flush_seconds: float = 10.0, tracker=None):
        self.store = store
        self.run = run
        self.flush_seconds = flush_seconds
        self.tracker = tracker
        self._metrics: list[dict[str, Any]] = []
        self._events: list[dict[str, Any]] = []
        self._costs: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()

    def metrics(self, step: int, **values: float | None) -> None:
        self._metrics.append({"run": self.run, "step": step, **values})
        if self.tracker is not None:
            self.tracker({f"train/{k}": v for k, v in values.items() if v is not None}, step=step)
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def event(self, step: int, kind: str, divergence: float | None) -> None:
        self._events.append({"run": self.run, "step": step, "kind": kind, "divergence": divergence})
        if self.tracker is not None and divergence is not None:  # e.g. events/sync: D(ref, init) at the sync
            self.tracker({f"events/{kind}": divergence}, step=step)

    def costs(self, rows: list[dict[str, Any]]) -> None:
        """The run's cost so far (``run_costs`` rows, replaced at each flush), written at the next flush."""
        self._costs = list(rows)

    def flush(self, *, final: bool = False) -> bool:
        """Write buffered rows; True once all are committed. A busy store keeps them for the next
        flush (False), except the final one, which raises."""
        self._last_flush = time.monotonic()
        if self.store is None:
            self._metrics, self._events, self._costs = [], [], []
            return True
        try:
            if self._events:
                self.store.upsert("ref_events", self._events)
                self._events = []
            if self._metrics:
                self.store.upsert("train_metrics", self._metrics)
                self._metrics = []
            if self._costs:
                self.store.upsert("run_costs", self._costs)
                self._costs = []
        except StoreError as exc:
            if final:
                raise
            warnings.warn(f"metrics kept in memory for now: {exc}", stacklevel=2)
            return False
        return True
