"""`refbench sweep`: a grid of training runs with one step budget, resumable.

A sweep is a list of ``RunSpec`` (a run name, a method preset and config overrides). The
grid form crosses methods x tau x gamma x beta x lr x seeds; a run is named after the
method and every axis given explicitly (``refdpo-tau16-seed1``), so the same grid always
maps to the same names. Finished runs are skipped, interrupted ones resumed from their
checkpoint. The runs go to ``jobs`` long-lived worker processes (``workers.py``), each with
``threads`` CPU threads (default 1: on a 2-core machine two 1-thread runs go faster than one
2-thread run of these small models). The thread count is fixed rather than derived from
``jobs`` because a run's float reductions depend on it: a run gives the same numbers at any
``jobs``. The workers share the store through its lock-and-retry.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RefbenchError, RunInterrupted
from .steps import Step

__all__ = ["RunSpec", "grid_specs", "run_specs", "spec_status"]

# CLI flag -> (config section, field) for the axes a grid can cross.
AXES = {
    "tau": ("method", "tau"),
    "gamma": ("method", "gamma"),
    "beta": ("method", "beta"),
    "lr": ("training", "learning_rate"),
    "seed": ("training", "seed"),
}


@dataclass(frozen=True)
class RunSpec:
    name: str
    method: str
    overrides: dict = field(default_factory=dict)  # {"method": {"tau": 16}, ...}
    preset: str = "toy"

    def train_arguments(self) -> list[str]:
        """The `refbench train` arguments that build this run (overrides through a JSON config file)."""
        return ["--name", self.name, "--method", self.method, "--preset", self.preset]


def _label(axis: str, value) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{axis}{text}"


def grid_specs(
    methods: list[str], *, preset: str = "toy", max_steps: int | None = None, extra: dict | None = None, **axes: list
) -> list[RunSpec]:
    """The cross product of methods and the given axes (tau, gamma, beta, lr, seed -> lists)."""
    unknown = sorted(set(axes) - set(AXES))
    if unknown:
        raise RefbenchError(f"unknown sweep axis {unknown[0]!r}; valid: {', '.join(AXES)}")
    from ..config import method_names

    unknown_methods = [m for m in methods if m not in method_names()]
    if unknown_methods or not methods:
        raise RefbenchError(
            f"unknown method {unknown_methods[0] if unknown_methods else '(none)'!r}; "
            f"valid: {', '.join(method_names())}"
        )
    given = [(axis, axes[axis]) for axis in AXES if axes.get(axis)]  # fixed order: one grid, one set of names
    specs = []
    for method in methods:
        for combination in itertools.product(*(values for _, values in given)):
            overrides: dict = {section: dict(values) for section, values in (extra or {}).items()}
            labels = []
            for (axis, _), value in zip(given, combination):
                section, key = AXES[axis]
                overrides.setdefault(section, {})[key] = value
                labels.append(_label(axis, value))
            if max_steps is not None:
                overrides.setdefault("training", {})["max_steps"] = max_steps
            specs.append(RunSpec("-".join([method, *labels]), method, overrides, preset))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise RefbenchError("the sweep names two runs alike; give each method once")
    return specs


def spec_status(spec: RunSpec, store) -> str:
    """'finished', 'diverged' (stopped on non-finite steps: resuming repeats it), 'partial' (exists,
    can resume) or 'new'."""
    record = store.get_run(spec.name)
    if record is None:
        return "new"
    return record["status"] if record["status"] in ("finished", "diverged") else "partial"


def _config_file(spec: RunSpec, folder: Path) -> Path:
    import json

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.name}.json"
    path.write_text(json.dumps({**spec.overrides, "name": spec.name}, indent=1))
    return path


def run_specs(
    specs: list[RunSpec],
    *,
    db: Path,
    out_root: Path,
    jobs: int = 1,
    threads: int = 1,
    progress: bool = True,
    log_folder: Path | None = None,
    then=None,
    timings: dict | None = None,
) -> dict[str, str]:
    """Train every spec that is not finished; returns name -> outcome ('skipped', 'trained', 'done', 'failed: ...').

    ``then(spec)`` may give more steps (``Step``) to run after a spec's training in the same
    worker, e.g. generate and score; they run for finished runs too. ``jobs`` long-lived worker
    processes of ``threads`` threads each run the specs; ``timings`` (a dict) receives each run's
    seconds per step and its wall time.
    """
    from tqdm.auto import tqdm

    from ..store import Store
    from .workers import Job, run_jobs

    if jobs < 1 or threads < 1:
        raise RefbenchError(f"--jobs and --threads must be >= 1; got {jobs} and {threads}")
    store = Store(db)
    log_folder = Path(log_folder or Path(out_root) / "_sweep")
    outcomes: dict[str, str] = {}
    queue, trained = [], set()
    for spec in specs:
        status = spec_status(spec, store)
        if status == "diverged":  # recorded as such; its evaluation has no final model to use
            outcomes[spec.name] = "diverged"
            continue
        steps = (
            []
            if status == "finished"
            else [
                Step(
                    "train",
                    spec.name,
                    {
                        "method": spec.method,
                        "preset": spec.preset,
                        "config": str(_config_file(spec, log_folder)),
                        "db": str(db),
                        "out": str(out_root),
                        "no_progress": True,
                        "resume": status == "partial",
                    },
                )
            ]
        )
        steps += list(then(spec) if then else [])
        if status != "finished":
            trained.add(spec.name)
        if steps:
            queue.append(Job(spec.name, steps, log_folder / f"{spec.name}.log"))
        else:
            outcomes[spec.name] = "skipped"
    del store  # the workers write; this process holds no connection meanwhile
    bar = tqdm(
        total=len(specs),
        initial=len(specs) - len(queue),
        desc="sweep",
        unit="run",
        disable=not progress,
        dynamic_ncols=True,
    )

    def on_result(result, busy: list[str]) -> None:
        if result.status == "done":
            outcomes[result.name] = "trained" if result.name in trained else "done"
        else:  # 'interrupted' without a Ctrl-C here: something else stopped the worker's run
            outcomes[result.name] = "failed: " + ("" if result.status == "failed" else "interrupted: ") + result.message
        if timings is not None:
            timings[result.name] = {**result.seconds, "wall": result.wall}
        bar.update(1)
        bar.set_postfix_str(", ".join(busy), refresh=True)

    try:
        run_jobs(queue, workers=jobs, threads=threads, on_result=on_result)
    except KeyboardInterrupt:  # the workers' trainers stopped at a step boundary with a checkpoint
        raise RunInterrupted("sweep interrupted; run the same command again to resume it") from None
    finally:
        bar.close()
    return {spec.name: outcomes[spec.name] for spec in specs if spec.name in outcomes}
