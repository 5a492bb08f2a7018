"""`refbench sweep`: a grid of training runs with one step budget, resumable.

A sweep is a list of ``RunSpec`` (a run name, a method preset and config overrides). The
grid form crosses methods x tau x gamma x beta x lr x seeds; a run is named after the
method and every axis given explicitly (``refdpo-tau16-seed1``), so the same grid always
maps to the same names. Finished runs are skipped, interrupted ones resumed from their
checkpoint. ``jobs > 1`` trains that many runs at once as separate ``refbench train``
processes sharing the CPU threads (on a 2-core machine two 1-thread runs go faster than one
2-thread run of these small models); they share the store through its lock-and-retry.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RefbenchError, RunInterrupted

__all__ = ["RunSpec", "grid_specs", "run_specs", "spec_status"]

# CLI flag -> (config section, field) for the axes a grid can cross.
AXES = {"tau": ("method", "tau"), "gamma": ("method", "gamma"), "beta": ("method", "beta"),
        "lr": ("training", "learning_rate"), "seed": ("training", "seed")}


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


def grid_specs(methods: list[str], *, preset: str = "toy", max_steps: int | None = None,
               extra: dict | None = None, **axes: list) -> list[RunSpec]:
    """The cross product of methods and the given axes (tau, gamma, beta, lr, seed -> lists)."""
    unknown = sorted(set(axes) - set(AXES))
    if unknown:
        raise RefbenchError(f"unknown sweep axis {unknown[0]!r}; valid: {', '.join(AXES)}")
    from ..config import method_names

    unknown_methods = [m for m in methods if m not in method_names()]
    if unknown_methods or not methods:
        raise RefbenchError(f"unknown method {unknown_methods[0] if unknown_methods else '(none)'!r}; "
                            f"valid: {', '.join(method_names())}")
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


def run_specs(specs: list[RunSpec], *, db: Path, out_root: Path, jobs: int = 1, progress: bool = True,
              log_folder: Path | None = None, then=None) -> dict[str, str]:
    """Train every spec that is not finished; returns name -> outcome ('skipped', 'trained', 'done', 'failed: ...').

    ``then(spec)`` may give more commands (argument lists for `refbench`) to run after a spec's
    training in the same job, e.g. generate and score; they run for finished runs too.
    """
    from tqdm.auto import tqdm

    from ..store import Store

    if jobs < 1:
        raise RefbenchError(f"--jobs must be >= 1; got {jobs}")
    store = Store(db)
    log_folder = Path(log_folder or Path(out_root) / "_sweep")
    outcomes: dict[str, str] = {}
    queue = []
    for spec in specs:
        status = spec_status(spec, store)
        if status == "diverged":  # recorded as such; its evaluation has no final model to use
            outcomes[spec.name] = "diverged"
            continue
        commands = [] if status == "finished" else [
            ["train", *spec.train_arguments(), "--config", str(_config_file(spec, log_folder)), "--db", str(db),
             "--out", str(out_root), "--no-progress", *(["--resume"] if status == "partial" else [])]]
        commands += list(then(spec) if then else [])
        if commands:
            queue.append(_Job(spec, commands, trained=status != "finished"))
        else:
            outcomes[spec.name] = "skipped"
    threads = max(1, (os.cpu_count() or 1) // jobs)
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    bar = tqdm(total=len(specs), initial=len(specs) - len(queue), desc="sweep", unit="run", disable=not progress,
               dynamic_ncols=True)
    running: list[_Job] = []
    try:
        while queue or running:
            while queue and len(running) < jobs:
                job = queue.pop(0)
                job.start_next(log_folder, environment)
                running.append(job)
                bar.set_postfix_str(", ".join(j.spec.name for j in running), refresh=True)
            time.sleep(0.2)
            for job in list(running):
                code = job.process.poll()
                if code is None:
                    continue
                if code == 0 and job.commands:
                    job.start_next(log_folder, environment)
                    continue
                job.log.close()
                running.remove(job)
                outcomes[job.spec.name] = ("trained" if job.trained else "done") if code == 0 else f"failed: {job.last_line()}"
                bar.update(1)
    except KeyboardInterrupt:
        for job in running:  # the trainers stop at a step boundary with a checkpoint
            job.process.terminate()
        for job in running:
            job.process.wait()
        raise RunInterrupted("sweep interrupted; run the same command again to resume it") from None
    finally:
        bar.close()
    return outcomes


class _Job:
    """One spec's commands, run one after another as `refbench` subprocesses, output to one log."""

    def __init__(self, spec: RunSpec, commands: list[list[str]], trained: bool):
        self.spec, self.commands, self.trained = spec, list(commands), trained
        self.process: subprocess.Popen | None = None
        self.log = None
        self.log_path: Path | None = None

    def start_next(self, log_folder: Path, environment: dict) -> None:
        log_folder.mkdir(parents=True, exist_ok=True)
        self.log_path = log_folder / f"{self.spec.name}.log"
        if self.log is None:
            self.log = open(self.log_path, "a")
        command = [sys.executable, "-m", "refbench", *self.commands.pop(0)]
        self.log.write("$ " + " ".join(command[2:]) + "\n")
        self.log.flush()
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=environment)

    def last_line(self) -> str:
        lines = self.log_path.read_text().strip().splitlines() if self.log_path else []
        return (lines[-1] if lines else "?")[:200]
