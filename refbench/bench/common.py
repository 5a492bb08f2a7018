"""The bench's worlds (toy, tiny SD), the real trainer driven step by step, interleaving and ratios."""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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
    latent_cache: Path | None = None  # trainers read it unless asked not to (make_trainer(cached=False))

    def config(self, method: str, *, lora_rank: int = 0, sections: dict | None = None):
        from ..config import load_config

        overrides = {key: dict(value) for key, value in self.overrides.items()}
        overrides.setdefault("model", {})["lora_rank"] = lora_rank
        for section, values in (sections or {}).items():
            overrides.setdefault(section, {}).update(values)
        return load_config(method=method, preset=self.preset, overrides=overrides, name=f"bench-{method}")


def toy_world(root: Path, quick: bool) -> World:
    """The embedded toy world with its committed base model and the toy preset's settings."""
    from ..toy.pairs import build_pairs, write_pairs

    pairs = write_pairs(build_pairs(128, "train", seed=0), root / "toy-pairs.parquet")
    training = {"batch_size": 2, "monitor_size": 4} if quick else {}
    world = World(
        "toy", "toy", {"data": {"source": str(pairs)}, "method": {"delta": NEVER}, "training": training}, root, quick
    )
    world.notes.append(
        "toy: the toy preset (committed base model)" + (", batch 2 pairs and monitor 4 (--quick)" if quick else "")
    )
    return world


def sd_world(root: Path, quick: bool) -> World:
    """A tiny random-weight SD1.5-style pipeline (VAE latents 4x8x8, CLIP text encoder) under the
    sd15 preset, with accumulation 1 and tau 8 (the preset's 128 and 32 spread the method's
    per-step work over 128 micro-batches and 4x fewer syncs: this is the harder case)."""
    from ..tiny import build_tiny_pipeline
    from ..toy.pairs import build_pairs, write_pairs

    folder = build_tiny_pipeline(root / "sd15-tiny")
    pairs = write_pairs(build_pairs(32, "train", seed=1), root / "sd-pairs.parquet")
    world = World(
        "sd15-tiny",
        "sd15",
        {
            "model": {
                "pretrained": str(folder),
                "resolution": 16,
                "gradient_checkpointing": False,
                "mixed_precision": "no",
            },
            "data": {"source": str(pairs), "num_workers": 0, "random_flip": False},  # flips need images, not the cache
            "method": {"tau": 8, "delta": NEVER},
            "training": {"batch_size": 4, "gradient_accumulation_steps": 1, "monitor_every": 8, "lr_warmup_steps": 0},
        },
        root,
        quick,
        latent_cache=root / "sd15-tiny-latents",
    )
    world.notes.append(
        "sd15-tiny: sd15 preset on a tiny random-weight pipeline, fp32, latents from the disk cache, "
        "batch 4 pairs, accumulation 1, tau 8, monitor every 8 (the preset's monitor set)"
    )
    return world


# -- driving the real trainer --------------------------------------------------------------
def make_trainer(
    world: World, method: str, accelerator, *, lora_rank: int = 0, sections: dict | None = None, cached: bool = True
):
    from ..training.data import load_preference_pairs
    from ..training.run import open_latent_cache
    from ..training.trainer import Trainer

    sections = {key: dict(value) for key, value in (sections or {}).items()}
    if world.latent_cache is not None and cached:
        sections.setdefault("data", {}).update(latent_cache=str(world.latent_cache), latent_dtype="float32")
    config = world.config(method, lora_rank=lora_rank, sections=sections)
    pairs = load_preference_pairs(config)
    cache = open_latent_cache(config, pairs, accelerator, progress=False)
    trainer = Trainer(
        config,
        pairs,
        world.root / "runs" / config.name,
        None,
        accelerator=accelerator,
        progress=False,
        latent_cache=cache,
    )
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
    trainer.config = dataclasses.replace(
        config, training=dataclasses.replace(config.training, max_steps=trainer.step + steps)
    )
    start = time.perf_counter()
    trainer.train()
    return (time.perf_counter() - start) / steps


class TimedRunLog:
    """A RunLog (store logging as in `refbench train`) that also times itself: the appends
    (``append_seconds``) and every flush with the rows it wrote (``flushes``)."""

    def __new__(cls, store, run: str):
        from ..training.run_log import RunLog

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
    return {
        "overhead": per_step / step,
        "short_bench": total / logged_seconds,
        "flush_fixed_seconds": fixed,
        "flush_per_row_seconds": per_row,
        "append_seconds_per_row": log.append_seconds / logged_steps,
        "flushes": log.flushes,
    }


class BarePasses:
    """The minimum of a DPO step: policy forward + backward on 2B images, reference forward on the
    same 2B, with the trainer's modules (for diff-dpo the reference is the initial model) and the
    noisy inputs of one real batch; no data loading, loss terms, optimizer, monitor or logging."""

    def __init__(self, trainer):
        import torch

        self.trainer = trainer
        backend = trainer.backend
        batch = trainer.batches.micro_batch(0)
        generator = torch.Generator().manual_seed(0)
        pairs = batch.num_pairs
        noise = torch.randn(batch.x0[:pairs].shape, generator=generator).to(batch.x0.device)
        timesteps = torch.randint(0, backend.num_train_timesteps, (pairs,), generator=generator).to(batch.x0.device)
        self.timesteps = timesteps.repeat(2)
        noise = noise.repeat(2, *[1] * (noise.dim() - 1))
        self.x_t = backend.add_noise(batch.x0, noise, self.timesteps)
        self.target = backend.target(batch.x0, noise, self.timesteps)
        self.cond = batch.cond.repeat(2)

    def block(self, steps: int) -> float:
        import torch

        from ..training.modelset import POLICY, REFERENCE

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
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            times[name].append(cases[name]())
    return times


def paired_ratio(times: dict[str, list[float]], top: str, bottom: str) -> float:
    """Median over repetitions of top/bottom measured in the same repetition."""
    return statistics.median(a / b for a, b in zip(times[top], times[bottom]))
