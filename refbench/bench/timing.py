"""Step timing of one world (a-d, f) and timestep-analysis throughput (g)."""

from __future__ import annotations

import dataclasses
import gc
import os
import statistics
import time
from collections.abc import Callable

# The profiler's C++ logging (kineto) is chatty on a machine without a GPU.
os.environ.setdefault("KINETO_LOG_LEVEL", "5")

from ..method.reference_update import Action
from .common import (
    BarePasses,
    TimedRunLog,
    World,
    _log,
    advance,
    cycle_length,
    interleave,
    logging_cost,
    make_trainer,
    paired_ratio,
)


# -- timing of one world ----------------------------------------------------------------------
class Probe:
    """Exclusive time per part of a step (data, forward passes and loss, backward, grad clipping,
    optimizer, sync, monitor) from wrapping the trainer's calls; a nested call's time counts for
    the inner part only (a sync's measurement is "monitor"). Per block, then medians."""

    PARTS = {"_micro_step": "forward+loss", "_update_reference": "sync"}
    # Parts that live on the trainer's helpers: (attribute of the trainer, its method, part).
    HELPER_PARTS = (("batches", "micro_batch", "data"), ("monitor", "divergences", "monitor"))

    def __init__(self):
        self.blocks: dict[str, list[dict[str, float]]] = {}
        self._current: dict[str, float] | None = None
        self._stack: list[list[float]] = []

    def attach(self, owner, attribute: str, part: str) -> None:
        call = getattr(owner, attribute, None)
        if call is None:  # a renamed method would silently move its time to "other"
            raise AttributeError(f"bench probe: {type(owner).__name__} has no {attribute!r}; update Probe's parts")

        def timed(*args, **kwargs):
            if self._current is None:
                return call(*args, **kwargs)
            self._stack.append([time.perf_counter(), 0.0])  # start, time of nested probed calls
            try:
                return call(*args, **kwargs)
            finally:
                begun, nested = self._stack.pop()
                elapsed = time.perf_counter() - begun
                self._current[part] = self._current.get(part, 0.0) + elapsed - nested
                if self._stack:
                    self._stack[-1][1] += elapsed

        setattr(owner, attribute, timed)

    def instrument(self, trainer) -> None:
        for attribute, part in self.PARTS.items():
            self.attach(trainer, attribute, part)
        for helper, attribute, part in self.HELPER_PARTS:
            self.attach(getattr(trainer, helper), attribute, part)
        self.attach(trainer.optimizer, "step", "optimizer")

    def instrument_accelerator(self, accelerator) -> None:
        self.attach(accelerator, "backward", "backward")
        self.attach(accelerator, "clip_grad_norm_", "grad_clip")

    @staticmethod
    def release_accelerator(accelerator) -> None:
        for attribute in ("backward", "clip_grad_norm_"):
            accelerator.__dict__.pop(attribute, None)  # back to the class's methods

    def run(self, case: str, block: Callable[[], float], steps: int) -> float:
        self._current = {}
        try:
            per_step = block()
        finally:
            parts, self._current = self._current, None
        self.blocks.setdefault(case, []).append({k: v / steps for k, v in parts.items()} | {"step": per_step})
        return per_step

    def breakdown(self) -> dict[str, dict[str, float]]:
        """Median seconds per step of each part; ``other``: the step's median minus the parts'."""
        out = {}
        for case, blocks in self.blocks.items():
            parts = {k: statistics.median(b.get(k, 0.0) for b in blocks) for k in blocks[0] if k != "step"}
            parts["other"] = statistics.median(b["step"] for b in blocks) - sum(parts.values())
            out[case] = parts
        return out


def time_world(world: World, accelerator, repetitions: int, *, uncached: bool) -> dict:
    from ..store import Store

    _log(f"[{world.name}] building trainers")
    diff = make_trainer(world, "diff-dpo", accelerator)
    ref = make_trainer(world, "refdpo", accelerator)
    steps = max(cycle_length(diff), cycle_length(ref))
    bare = BarePasses(diff)
    probe = Probe()
    for trainer in (diff, ref):
        probe.instrument(trainer)
    probe.instrument_accelerator(accelerator)  # shared by the trainers; released below
    log = TimedRunLog(Store(world.root / f"{world.name}-bench.duckdb"), ref.config.name)
    logged = {"seconds": 0.0, "steps": 0}

    def run(name: str, trainer) -> Callable[[], float]:
        return lambda: probe.run(name, lambda: advance(trainer, steps), steps)

    def refdpo_logged() -> float:
        # The RunLog flushes every flush_seconds of *logged* time, as in a run: its clock is
        # held while other cases run (else they would make it flush more often than a run does).
        log._last_flush = time.monotonic() - logged.get("since_flush", 0.0)
        ref.log = log
        try:
            per_step = advance(ref, steps)
        finally:
            ref.log = None
        logged["since_flush"] = time.monotonic() - log._last_flush
        logged["seconds"] += per_step * steps
        logged["steps"] += steps
        return per_step

    cases: dict[str, Callable[[], float]] = {
        "bare": lambda: bare.block(steps),
        "diff-dpo": run("diff-dpo", diff),
        "refdpo": run("refdpo", ref),
    }
    if not (world.quick and uncached):  # --quick measures logging on the toy world only
        cases["refdpo+log"] = refdpo_logged
    other = None
    if uncached:  # (f) the same refdpo step, encoding images and captions every step
        other = make_trainer(world, "refdpo", accelerator, cached=False)
        cases["refdpo-uncached"] = lambda: advance(other, steps)
    _log(f"[{world.name}] warm-up: {steps} steps each (monitor set, caches, first allocations)")
    for trainer in (diff, ref, other):
        if trainer is not None:
            advance(trainer, steps)
    bare.block(2)
    # A full garbage collection walks every Python object (three UNets' modules and tensors: ~0.25 s
    # on the toy world) and lands in whichever block happens to allocate then; a run pays it a few
    # times in all. Collect now and freeze what exists, so that it does not land in one timed block.
    gc.collect()
    gc.freeze()
    _log(f"[{world.name}] timing {len(cases)} cases x {repetitions} repetitions, {steps} steps per block")
    try:
        times = interleave(cases, repetitions)
    finally:
        gc.unfreeze()
    ratios = {
        "refdpo_over_diffdpo_step": paired_ratio(times, "refdpo", "diff-dpo"),
        "diffdpo_over_bare_step": paired_ratio(times, "diff-dpo", "bare"),
        "refdpo_over_bare_step": paired_ratio(times, "refdpo", "bare"),
    }
    logging = None
    if "refdpo+log" in cases:
        log.flush()  # what is still buffered: its rows and cost count
        logging = logging_cost(log, logged["seconds"], logged["steps"], ref.config.training.checkpoint_every)
        ratios["logging_overhead"] = logging["overhead"]
        ratios["logging_overhead_short_bench"] = logging["short_bench"]
        ratios["logging_overhead_ab"] = paired_ratio(times, "refdpo+log", "refdpo") - 1.0
    if uncached:
        ratios["cached_over_uncached_step"] = paired_ratio(times, "refdpo", "refdpo-uncached")
    result = {
        "ratios": ratios,
        "median_seconds_per_step": {name: statistics.median(values) for name, values in times.items()},
        "seconds_per_step": times,
        "breakdown_seconds_per_step": probe.breakdown(),
        "logging": logging,
        "steps_per_block": steps,
        "batch_pairs": diff.config.training.batch_size,
        "tau": ref.config.method.tau,
        "monitor_every": ref.config.training.monitor_every,
        "monitor_size": ref.config.training.monitor_size,
        "syncs_during_bench": [e.kind for e in ref.updater.events].count(Action.SYNC.value),
        "log_rows_written": logged["steps"],
        "notes": world.notes,
    }
    result["analysis"] = analysis_throughput(world, ref, accelerator, repetitions) if world.name == "toy" else None
    Probe.release_accelerator(accelerator)
    diff = ref = other = bare = None  # release the trainers (the cases' closures keep their names)
    gc.collect()
    return result


# -- (g) timestep-analysis throughput -----------------------------------------------------------
# The analysis (experiments.timestep_analysis.evaluate_errors) on the trainer's models, against
# its own denoiser calls recorded and replayed bare.
ANALYSIS_PAIRS = {True: 3, False: 24}  # validation pairs per analysis run (--quick, full)
ANALYSIS_INTERVALS = 10
ANALYSIS_BATCH_PAIRS = 120  # -> 12 pairs x 10 intervals x 2 images = 240 images per forward pass


def analysis_workload(world: World, trainer, quick: bool):
    """(run, None) for the timestep analysis on ``trainer``'s models, or (None, reason)."""
    from ..experiments.timestep_analysis import evaluate_errors as entry
    from ..training.data import load_preference_pairs
    from ..training.modelset import POLICY, REFERENCE

    config = trainer.config
    validation = dataclasses.replace(config, data=dataclasses.replace(config.data, max_pairs=ANALYSIS_PAIRS[quick]))
    pairs = load_preference_pairs(validation)

    def run() -> None:
        entry(
            trainer.backend,
            trainer.models,
            pairs,
            which=(POLICY, REFERENCE, "initial"),
            intervals=ANALYSIS_INTERVALS,
            seed=0,
            batch_pairs=ANALYSIS_BATCH_PAIRS,
            progress=False,
        )

    return run, None


def analysis_throughput(world: World, trainer, accelerator, repetitions: int) -> dict | None:
    """The analysis against its own denoiser forward passes replayed bare: the same modules, inputs
    and batches (real images noised as the analysis does: input values change a CPU's speed by
    several percent, so random inputs would not do), without data loading, encoding or bookkeeping.
    Full fine-tuning keeps one module per model, so a recorded call replays on the right weights."""
    import torch

    run, reason = analysis_workload(world, trainer, world.quick)
    if run is None:
        _log(f"[{world.name}] timestep-analysis throughput skipped: {reason}")
        return {"skipped": reason}
    backend = trainer.backend
    calls = []
    predict = backend.predict

    def recording(denoiser, x_t, timesteps, cond):
        calls.append((denoiser, x_t, timesteps, cond))
        return predict(denoiser, x_t, timesteps, cond)

    backend.predict = recording
    try:
        run()  # warm-up, recording the denoiser calls
    finally:
        del backend.predict  # back to the class's method

    def bare() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            for denoiser, x_t, timesteps, cond in calls:
                backend.predict(denoiser, x_t, timesteps, cond)
        return time.perf_counter() - start

    def analysis() -> float:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    _log(
        f"[{world.name}] timestep analysis: {len(calls)} forward passes of up to {max(len(c[1]) for c in calls)} images"
    )
    times = interleave({"bare-forward": bare, "analysis": analysis}, min(repetitions, 5))
    return {
        "analysis_over_bare_forward": paired_ratio(times, "bare-forward", "analysis"),  # throughput ratio
        "median_seconds": {k: statistics.median(v) for k, v in times.items()},
        "seconds": times,
        "images_per_run": sum(len(c[1]) for c in calls),
        "forward_passes": len(calls),
    }
