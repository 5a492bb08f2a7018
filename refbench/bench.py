"""`refbench bench`: what training and analysis cost against their bare passes, side by side.

A DPO step costs at least the policy's forward and backward pass on the 2B images of B pairs
plus the reference's forward pass on the same 2B ("bare passes"). This module measures, in
one process and one run, on the embedded toy world and on a tiny SD1.5-style latent model
(``refbench.tiny``; random weights, built offline):

(a) the bare passes, with the trainer's own modules and inputs of a real batch;
(b) a ``diff-dpo`` step and (c) a ``refdpo`` step, each through the real ``Trainer.train()``
    loop over blocks of whole sync/monitor cycles (lcm(tau, monitor_every) steps), so that
    every block holds its share of syncs and divergence measurements; delta is raised out of
    reach, so the reference keeps syncing all through (the method's most expensive phase);
(d) the ``refdpo`` step again with store logging on (a RunLog writing to a DuckDB file);
(e) peak memory of each method, with full fine-tuning and with LoRA;
(f) on the tiny SD model: a step with cached VAE latents and text embeddings against one
    that encodes every step;
(g) timestep-analysis throughput against bare forward passes of the same batches.

The configurations are timed in interleaved blocks (ABCD, BCDA, ...: each repetition rotates
the order), and ratios are medians of the per-repetition ratios, so a load change on a shared
machine hits both sides of a ratio alike. Memory is the peak of bytes held by torch's
allocator, from building the Trainer through a step that syncs and measures (on a CPU from
the profiler's allocation events, on a GPU ``torch.cuda.max_memory_allocated``): what a GPU
user would see, without the interpreter's and libraries' own memory that RSS would add.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

# The profiler's C++ logging (kineto) is chatty on a machine without a GPU.
os.environ.setdefault("KINETO_LOG_LEVEL", "5")

NEVER = 1e9  # delta out of reach: the reference syncs all through the bench
MIN_BLOCK_STEPS = 8  # a timed block holds whole sync/monitor cycles, and at least this many steps
TARGETS = {  # name -> (comparison, bound); see issue 7 and benchmarks/RESULTS.md
    "refdpo_over_diffdpo_step": ("<=", 1.05),
    "diffdpo_over_bare_step": ("<=", 1.10),
    "logging_overhead": ("<=", 0.02),
    # One copy of the UNet's weights; the 0.1% covers small tables (the gamma sampler's 50 bin
    # probabilities, 400 bytes, are refdpo's only other extra).
    "memory_extra_over_weights_full": ("<=", 1.001),
    "memory_ratio_lora": ("<=", 1.05),
    "analysis_over_bare_forward": (">=", 0.9),
}


_START = time.perf_counter()


def _log(message: str) -> None:
    print(f"[{time.perf_counter() - _START:6.1f} s] {message}", file=sys.stderr, flush=True)


# -- worlds: a preset plus the overrides the bench runs it with -----------------------------
@dataclass
class World:
    name: str
    preset: str
    overrides: dict
    root: Path
    quick: bool = False
    notes: list[str] = field(default_factory=list)

    def config(self, method: str, *, lora_rank: int = 0, sections: dict | None = None):
        from .config import load_config

        overrides = {key: dict(value) for key, value in self.overrides.items()}
        overrides.setdefault("model", {})["lora_rank"] = lora_rank
        for section, values in (sections or {}).items():
            overrides.setdefault(section, {}).update(values)
        return load_config(method=method, preset=self.preset, overrides=overrides, name=f"bench-{method}")


def toy_world(root: Path, quick: bool) -> World:
    """The embedded toy world with its committed base model and the toy preset's settings."""
    from .toy.pairs import build_pairs, write_pairs

    pairs = write_pairs(build_pairs(128, "train", seed=0), root / "toy-pairs.parquet")
    training = {"batch_size": 2, "monitor_size": 4} if quick else {}
    world = World("toy", "toy", {"data": {"source": str(pairs)}, "method": {"delta": NEVER}, "training": training}, root, quick)
    world.notes.append("toy: the toy preset (committed base model)" + (", batch 2 pairs and monitor 4 (--quick)" if quick else ""))
    return world


def sd_world(root: Path, quick: bool) -> World:
    """A tiny random-weight SD1.5-style pipeline (VAE latents 4x8x8, CLIP text encoder) under the
    sd15 preset, with accumulation 1 and tau 8 (the preset's 128 and 32 spread the method's
    per-step work over 128 micro-batches and 4x fewer syncs: this is the harder case)."""
    from .tiny import build_tiny_pipeline
    from .toy.pairs import build_pairs, write_pairs

    folder = build_tiny_pipeline(root / "sd15-tiny", "sd15")
    pairs = write_pairs(build_pairs(32, "train", seed=1), root / "sd-pairs.parquet")
    world = World("sd15-tiny", "sd15", {
        "model": {"pretrained": str(folder), "resolution": 16, "gradient_checkpointing": False, "mixed_precision": "no"},
        "data": {"source": str(pairs), "cache_latents": True},
        "method": {"tau": 8, "delta": NEVER},
        "training": {"batch_size": 4, "gradient_accumulation_steps": 1, "monitor_every": 8, "lr_warmup_steps": 0},
    }, root, quick)
    world.notes.append("sd15-tiny: sd15 preset on a tiny random-weight pipeline, fp32, cached latents, "
                       "batch 4 pairs, accumulation 1, tau 8, monitor every 8 (4 winners)")
    return world


# -- driving the real trainer --------------------------------------------------------------
def make_trainer(world: World, method: str, accelerator, *, lora_rank: int = 0, sections: dict | None = None):
    from .train_run import load_preference_pairs
    from .trainer import Trainer

    config = world.config(method, lora_rank=lora_rank, sections=sections)
    pairs = load_preference_pairs(config)
    trainer = Trainer(config, pairs, world.root / "runs" / config.name, None, accelerator=accelerator, progress=False)
    trainer.save = lambda: None  # checkpoints are not part of a step
    return trainer


def cycle_length(trainer) -> int:
    """Steps in whole cycles of syncs and divergence measurements (at least MIN_BLOCK_STEPS)."""
    method, training = trainer.config.method, trainer.config.training
    cycle = math.lcm(method.tau, training.monitor_every) if method.reference == "sync" else training.monitor_every
    return cycle * max(1, math.ceil(MIN_BLOCK_STEPS / cycle))


def advance(trainer, steps: int) -> float:
    """Run ``steps`` more optimizer steps through ``Trainer.train()``; seconds per step."""
    config = trainer.config
    trainer.config = dataclasses.replace(config, training=dataclasses.replace(config.training, max_steps=trainer.step + steps))
    start = time.perf_counter()
    trainer.train()
    return (time.perf_counter() - start) / steps


class TimedRunLog:
    """A RunLog (store logging as in `refbench train`) that also times itself: the appends
    (``append_seconds``) and every flush with the rows it wrote (``flushes``)."""

    def __new__(cls, store, run: str):
        from .run_log import RunLog

        class _Timed(RunLog):
            append_seconds = 0.0

            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.flushes: list[tuple[int, float]] = []
                self._in_metrics = False

            def metrics(self, step, **values):
                start = time.perf_counter()
                self._in_metrics = True
                try:
                    return super().metrics(step, **values)  # may flush: timed there, not here
                finally:
                    self._in_metrics = False
                    self.append_seconds += time.perf_counter() - start - self._last_flush_seconds
                    self._last_flush_seconds = 0.0

            def event(self, step, kind, divergence):
                start = time.perf_counter()
                super().event(step, kind, divergence)
                self.append_seconds += time.perf_counter() - start

            _last_flush_seconds = 0.0

            def flush(self, *, final: bool = False):
                rows = len(self._metrics) + len(self._events)
                start = time.perf_counter()
                try:
                    return super().flush(final=final)
                finally:
                    elapsed = time.perf_counter() - start
                    if rows:
                        self.flushes.append((rows, elapsed))
                    if self._in_metrics:
                        self._last_flush_seconds = elapsed

        return _Timed(store, run)


def logging_cost(log, logged_seconds: float, logged_steps: int, checkpoint_every: int) -> dict:
    """Store logging as a share of step time in a long run, from measured costs: a flush costs
    ``fixed + per_row * rows`` (fitted by least squares over the bench's flushes, one of them a
    single row); a run appends one row per step and flushes every ``flush_seconds`` and at every
    checkpoint. Also the plain share of all logging time within the bench (``short_bench``),
    which overstates a run's: its last flush holds a few seconds' rows but pays a whole flush."""
    for k in range(3):  # single-row flushes pin the fixed cost
        log.metrics(10**9 + k, loss=0.0)
        log.flush()
    rows = [n for n, _ in log.flushes]
    seconds = [f for _, f in log.flushes]
    mean_n, mean_f = statistics.fmean(rows), statistics.fmean(seconds)
    spread = sum((n - mean_n) ** 2 for n in rows)
    per_row = max(0.0, sum((n - mean_n) * (f - mean_f) for n, f in zip(rows, seconds)) / spread) if spread else 0.0
    fixed = max(0.0, mean_f - per_row * mean_n)
    step = logged_seconds / logged_steps
    per_step = log.append_seconds / logged_steps + per_row + fixed * (step / log.flush_seconds + 1 / checkpoint_every)
    total = log.append_seconds + sum(seconds[:-3])
    return {"overhead": per_step / step, "short_bench": total / logged_seconds, "flush_fixed_seconds": fixed,
            "flush_per_row_seconds": per_row, "append_seconds_per_row": log.append_seconds / logged_steps,
            "flushes": log.flushes}


class BarePasses:
    """The minimum of a DPO step: policy forward + backward on 2B images, reference forward on the
    same 2B, with the trainer's modules (for diff-dpo the reference is the initial model) and the
    noisy inputs of one real batch; no data loading, loss terms, optimizer, monitor or logging."""

    def __init__(self, trainer):
        import torch

        self.trainer = trainer
        backend = trainer.backend
        batch = trainer._batch(0)
        generator = torch.Generator().manual_seed(0)
        pairs = batch.pairs
        noise = torch.randn(batch.x0[:pairs].shape, generator=generator).to(batch.x0.device)
        timesteps = torch.randint(0, backend.num_train_timesteps, (pairs,), generator=generator).to(batch.x0.device)
        self.timesteps = timesteps.repeat(2)
        noise = noise.repeat(2, *[1] * (noise.dim() - 1))
        self.x_t = backend.add_noise(batch.x0, noise, self.timesteps)
        self.target = backend.target(batch.x0, noise, self.timesteps)
        self.cond = batch.cond.repeat(2)

    def block(self, steps: int) -> float:
        import torch

        from .modelset import POLICY, REFERENCE

        trainer, backend = self.trainer, self.trainer.backend
        params = trainer.models.trainable_parameters()
        start = time.perf_counter()
        for _ in range(steps):
            with trainer.accelerator.autocast(), trainer.models.use(POLICY, trainer.policy_forward) as policy:
                model_err = backend.errors(policy, self.x_t, self.timesteps, self.cond, self.target)
            with torch.no_grad(), trainer.accelerator.autocast(), trainer.models.use(REFERENCE) as reference:
                backend.errors(reference, self.x_t, self.timesteps, self.cond, self.target)
            trainer.accelerator.backward(model_err.mean())
            for p in params:
                p.grad = None
        return (time.perf_counter() - start) / steps


# -- interleaved repetitions ------------------------------------------------------------------
def interleave(cases: dict[str, Callable[[], float]], repetitions: int) -> dict[str, list[float]]:
    """Each repetition runs every case once; the order rotates by one each repetition."""
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repetitions):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            times[name].append(cases[name]())
    return times


def paired_ratio(times: dict[str, list[float]], top: str, bottom: str) -> float:
    """Median over repetitions of top/bottom measured in the same repetition."""
    return statistics.median(a / b for a, b in zip(times[top], times[bottom]))


# -- timing of one world ----------------------------------------------------------------------
class Probe:
    """Exclusive time per part of a step (data, forward passes and loss, backward, grad clipping,
    optimizer, sync, monitor) from wrapping the trainer's calls; a nested call's time counts for
    the inner part only (a sync's measurement is "monitor"). Per block, then medians."""

    PARTS = {"_batch": "data", "_micro_step": "forward+loss", "_divergences": "monitor", "_update_reference": "sync"}

    def __init__(self):
        self.blocks: dict[str, list[dict[str, float]]] = {}
        self._current: dict[str, float] | None = None
        self._stack: list[list[float]] = []

    def attach(self, owner, attribute: str, part: str) -> None:
        call = getattr(owner, attribute, None)
        if call is None:  # renamed since: the breakdown just lacks that part
            return

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
    from .store import Store

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
        other = make_trainer(world, "refdpo", accelerator, sections={"data": {"cache_latents": False}})
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
        "syncs_during_bench": sum(1 for e in ref.updater.events if e.kind == "sync"),
        "log_rows_written": logged["steps"],
        "notes": world.notes,
    }
    result["analysis"] = analysis_throughput(world, ref, accelerator, repetitions) if world.name == "toy" else None
    Probe.release_accelerator(accelerator)
    del diff, ref, other, bare
    gc.collect()
    return result


# -- (g) timestep-analysis throughput -----------------------------------------------------------
# HOOK for the lead: ``analysis_workload`` returns ``(run, None)``, where ``run()`` performs the
# timestep analysis's evaluation once on the trainer's models, or ``(None, reason)`` to skip (the
# bench prints the reason and reports ``analysis_over_bare_forward`` as null). The bare side
# needs nothing more: the UNet calls of one run are recorded and replayed as they were. Wire it to
# refbench.timestep_analysis's entry point (name still to be announced); the tentative wiring
# below calls ``evaluate_errors``.
ANALYSIS_PAIRS = {True: 3, False: 24}  # validation pairs per analysis run (--quick, full)
ANALYSIS_INTERVALS = 10
ANALYSIS_BATCH_PAIRS = 120  # -> 12 pairs x 10 intervals x 2 images = 240 images per forward pass


def analysis_workload(world: World, trainer, quick: bool):
    """(run, None) for the timestep analysis on ``trainer``'s models, or (None, reason)."""
    try:
        from . import timestep_analysis
    except ImportError:
        return None, "refbench/timestep_analysis.py does not exist yet"
    entry = getattr(timestep_analysis, "evaluate_errors", None)  # LEAD: the announced entry point
    if entry is None:
        return None, "refbench.timestep_analysis has no evaluate_errors (hook not wired)"
    from .modelset import POLICY, REFERENCE
    from .train_run import load_preference_pairs

    config = trainer.config
    validation = dataclasses.replace(config, data=dataclasses.replace(config.data, max_pairs=ANALYSIS_PAIRS[quick]))
    pairs = load_preference_pairs(validation)

    def run() -> None:
        entry(trainer.backend, trainer.models, pairs, which=(POLICY, REFERENCE, "initial"), intervals=ANALYSIS_INTERVALS,
              seed=0, batch_pairs=ANALYSIS_BATCH_PAIRS, progress=False)

    return run, None


def analysis_throughput(world: World, trainer, accelerator, repetitions: int) -> dict | None:
    """The analysis against its own UNet forward passes replayed bare: the same modules, inputs
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

    def recording(unet, x_t, timesteps, cond):
        calls.append((unet, x_t, timesteps, cond))
        return predict(unet, x_t, timesteps, cond)

    backend.predict = recording
    try:
        run()  # warm-up, recording the UNet calls
    finally:
        del backend.predict  # back to the class's method

    def bare() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            for unet, x_t, timesteps, cond in calls:
                backend.predict(unet, x_t, timesteps, cond)
        return time.perf_counter() - start

    def analysis() -> float:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    _log(f"[{world.name}] timestep analysis: {len(calls)} forward passes of up to {max(len(c[1]) for c in calls)} images")
    times = interleave({"bare-forward": bare, "analysis": analysis}, min(repetitions, 5))
    return {"analysis_over_bare_forward": paired_ratio(times, "bare-forward", "analysis"),  # throughput ratio
            "median_seconds": {k: statistics.median(v) for k, v in times.items()}, "seconds": times,
            "images_per_run": sum(len(c[1]) for c in calls), "forward_passes": len(calls)}


# -- (e) memory -------------------------------------------------------------------------------
def _profiled_peak(build_and_step: Callable[[], object]) -> tuple[int, object]:
    """Peak bytes held by torch's allocator while ``build_and_step`` runs (from the start)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = build_and_step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base, out
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = build_and_step()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak, out


def _unique_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if t is None:
            continue
        key = (t.untyped_storage().data_ptr(), t.device)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def _state_bytes(trainer) -> int:
    """Bytes of every parameter and buffer of the models and frozen encoders, and of the optimizer state."""
    models, backend = trainer.models, trainer.backend
    modules = [models.policy_module, getattr(models, "reference_module", None), getattr(models, "initial_module", None)]
    for name in ("vae", "text_encoders", "components"):
        part = getattr(backend, name, None)
        if isinstance(part, list):
            modules += part
        elif part is not None and hasattr(part, "text_encoder"):
            modules.append(part.text_encoder)
        elif part is not None:
            modules.append(part)
    tensors = [t for m in modules if m is not None for t in (*m.parameters(), *m.buffers())]
    tensors += [v for state in trainer.optimizer.state.values() for v in state.values() if hasattr(v, "untyped_storage")]
    return _unique_bytes(tensors)


def measure_memory(world: World, method: str, lora_rank: int, accelerator) -> dict:
    """Build the trainer and run 2 steps (tau = monitor_every = 2: step 2 syncs and measures)."""

    def build_and_step():
        trainer = make_trainer(world, method, accelerator, lora_rank=lora_rank,
                               sections={"method": {"tau": 2}, "training": {"monitor_every": 2}})
        advance(trainer, 2)
        return trainer

    gc.collect()
    peak, trainer = _profiled_peak(build_and_step)
    weights = _unique_bytes(trainer.models.policy_module.parameters())
    out = {"peak_bytes": peak, "state_bytes": _state_bytes(trainer), "unet_weight_bytes": weights}
    del trainer
    gc.collect()
    return out


def memory_table(worlds: list[World], accelerator, *, quick: bool, lora_rank: int = 4) -> dict:
    """Full fine-tuning and LoRA on each world (--quick: toy full and sd15-tiny LoRA only)."""
    table = {}
    for world in worlds:
        for lora in (0, lora_rank):
            if quick and (lora > 0) == (world.name == "toy"):
                continue
            key = f"{world.name}/{'lora' if lora else 'full'}"
            _log(f"[memory] {key}")
            row = {method: measure_memory(world, method, lora, accelerator) for method in ("diff-dpo", "refdpo")}
            diff, ref = row["diff-dpo"], row["refdpo"]
            row["refdpo_over_diffdpo"] = ref["peak_bytes"] / diff["peak_bytes"]
            row["extra_bytes"] = ref["peak_bytes"] - diff["peak_bytes"]
            row["extra_over_unet_weights"] = row["extra_bytes"] / diff["unet_weight_bytes"]
            table[key] = row
    return table


# -- the whole bench ----------------------------------------------------------------------------
def run_bench(*, quick: bool = False, repetitions: int | None = None, threads: int | None = None,
              workdir: Path | None = None) -> dict:
    """Every measurement of the module docstring; returns the JSON-ready result."""
    import torch
    from accelerate import Accelerator

    started = time.perf_counter()
    repetitions = repetitions or (3 if quick else 7)
    if threads:
        torch.set_num_threads(threads)
    load_before = os.getloadavg()
    if load_before[0] > (os.cpu_count() or 1) - 0.5:
        _log(f"warning: load average {load_before[0]:.1f} on {os.cpu_count()} cores: other work competes; "
             "with several torch threads every parallel op can wait for a descheduled thread (try --threads 1)")
    accelerator = Accelerator(mixed_precision="no", cpu=not torch.cuda.is_available())
    with tempfile.TemporaryDirectory(prefix="refbench-bench-") as tmp:
        root = Path(workdir or tmp)
        worlds = [toy_world(root, quick), sd_world(root, quick)]
        timings = {world.name: time_world(world, accelerator, repetitions, uncached=world.name == "sd15-tiny")
                   for world in worlds}
        memory = memory_table(worlds, accelerator, quick=quick)
    return summarise(timings, memory, quick=quick, repetitions=repetitions, seconds=time.perf_counter() - started,
                     load=(load_before, os.getloadavg()))


def summarise(timings: dict, memory: dict, *, quick: bool, repetitions: int, seconds: float, load) -> dict:
    import torch

    def worst(key: str, rows, higher_is_worse: bool = True):
        values = [r[key] for r in rows if r.get(key) is not None]
        if not values:
            return None
        return max(values) if higher_is_worse else min(values)

    ratios = [t["ratios"] for t in timings.values()]
    full = [row for key, row in memory.items() if key.endswith("/full")]
    lora = [row for key, row in memory.items() if key.endswith("/lora")]
    analysis = [t["analysis"] for t in timings.values() if t.get("analysis")]
    out = {
        "refdpo_over_diffdpo_step": worst("refdpo_over_diffdpo_step", ratios),
        "diffdpo_over_bare_step": worst("diffdpo_over_bare_step", ratios),
        "logging_overhead": worst("logging_overhead", ratios),
        "refdpo_over_diffdpo_memory": worst("refdpo_over_diffdpo", memory.values()),
        "cached_over_uncached_step": worst("cached_over_uncached_step", ratios),
        "analysis_over_bare_forward": worst("analysis_over_bare_forward", analysis, higher_is_worse=False),
        "memory_extra_over_weights_full": worst("extra_over_unet_weights", full),
        "memory_ratio_lora": worst("refdpo_over_diffdpo", lora),
    }
    out["targets"] = {}
    for name, (op, bound) in TARGETS.items():
        value = out.get(name)
        met = None if value is None else (value <= bound if op == "<=" else value >= bound)
        out["targets"][name] = {"value": value, "target": f"{op} {bound}", "met": met}
    out["medians"] = {f"{world}/{case}": seconds
                      for world, t in timings.items() for case, seconds in t["median_seconds_per_step"].items()}
    out["worlds"] = timings
    out["memory"] = memory
    out["run"] = {"quick": quick, "repetitions": repetitions, "seconds": round(seconds, 1),
                  "top_level": "each top-level ratio is the worse of the two worlds (toy, sd15-tiny)",
                  "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                              "torch_threads": torch.get_num_threads(), "load_average_before": load[0],
                              "load_average_after": load[1], "cuda": torch.cuda.is_available()}}
    return out


def format_table(result: dict) -> str:
    """The human-readable summary: targets, then per-world medians and ratios, then memory."""
    lines = ["target                            value     target     met"]
    for name, row in result["targets"].items():
        value = "n/a" if row["value"] is None else f"{row['value']:.3f}"
        met = {True: "yes", False: "NO", None: "-"}[row["met"]]
        lines.append(f"{name:<33} {value:>8}  {row['target']:>9}  {met:>5}")
    cached = result.get("cached_over_uncached_step")
    lines.append(f"{'cached_over_uncached_step':<33} {cached:>8.3f}  {'(info)':>9}" if cached else "")
    for world, t in result["worlds"].items():
        lines.append("")
        lines.append(f"{world}: {t['batch_pairs']} pairs/step, tau {t['tau']}, monitor every {t['monitor_every']} "
                     f"({t['monitor_size']} winners), {t['steps_per_block']} steps per block")
        for case, seconds in t["median_seconds_per_step"].items():
            lines.append(f"  {case:<18} {seconds * 1000:8.1f} ms/step (median)")
        for name, value in t["ratios"].items():
            lines.append(f"  {name:<30} {value:8.3f}")
        logging = t.get("logging")
        if logging:
            lines.append(f"  store logging: a flush costs {logging['flush_fixed_seconds'] * 1000:.0f} ms + "
                         f"{logging['flush_per_row_seconds'] * 1000:.1f} ms per row; all logging within this short "
                         f"bench: {logging['short_bench'] * 100:.1f}% of its steps")
        for name, parts in t.get("breakdown_seconds_per_step", {}).items():
            shares = ", ".join(f"{part} {seconds * 1000:.1f}" for part, seconds in sorted(parts.items()))
            lines.append(f"  where a {name} step goes (ms): {shares}")
        analysis = t.get("analysis")
        if analysis and "skipped" not in analysis:
            lines.append(f"  {'analysis_over_bare_forward':<30} {analysis['analysis_over_bare_forward']:8.3f}")
        elif analysis:
            lines.append(f"  timestep analysis skipped: {analysis['skipped']}")
    lines.append("")
    lines.append("memory (peak torch-allocated MB from building the trainer through a sync step)")
    for key, row in result["memory"].items():
        d, r = row["diff-dpo"], row["refdpo"]
        lines.append(f"  {key:<16} diff-dpo {d['peak_bytes'] / 1e6:8.2f}  refdpo {r['peak_bytes'] / 1e6:8.2f}  "
                     f"ratio {row['refdpo_over_diffdpo']:.3f}  extra/UNet weights {row['extra_over_unet_weights']:.2f}")
    lines.append(f"\n{result['run']['seconds']} s, {result['run']['repetitions']} repetitions"
                 f"{' (--quick)' if result['run']['quick'] else ''}; load average before/after "
                 f"{result['run']['machine']['load_average_before'][0]:.2f}/{result['run']['machine']['load_average_after'][0]:.2f}")
    return "\n".join(line for line in lines if line is not None)


def bench(*, quick: bool = False, as_json: bool = False, out: Path | None = None, repetitions: int | None = None,
          threads: int | None = None) -> str:
    """What `refbench bench` prints (the table, or the JSON); writes the JSON to ``out`` if given."""
    result = run_bench(quick=quick, repetitions=repetitions, threads=threads)
    text = json.dumps(result, indent=2)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    return text if as_json else format_table(result)


__all__ = ["bench", "run_bench", "summarise", "format_table", "TARGETS"]
