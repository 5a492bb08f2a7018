"""One step of a planned run (train, generate, score, timestep-analysis), called in this process.

A plan worker (``workers.py``) runs a run's steps one after another in one long-lived process,
so the interpreter, imports and cached prompts are paid once per worker instead of once per
step. Each step calls the same library function as its `refbench` command, with the same
arguments; ``command_line`` is that command, written to the run's log so that a step can be
repeated by hand.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Step", "STEP_KINDS"]

# The part of a run's cost each step is: how `benchmarks/reproduce_speed.py` splits a run's seconds.
STEP_KINDS = {"train": "training", "generate": "sampling", "score": "scoring", "timestep-analysis": "analysis"}


@dataclass(frozen=True)
class Step:
    """``command`` (a key of STEP_KINDS) of ``run``; ``options`` are the `refbench COMMAND` flags
    (``{"db": "x.duckdb", "seeds": 2}`` -> ``--db x.duckdb --seeds 2``; True -> a bare flag)."""

    command: str
    run: str
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.command not in STEP_KINDS:
            raise ValueError(f"unknown step {self.command!r}; valid: {', '.join(STEP_KINDS)}")

    def command_line(self) -> str:
        words = ["refbench", self.command] + (["--name", self.run] if self.command == "train" else [self.run])
        for key, value in self.options.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                words.append(flag)
            elif value is not None and value is not False:
                words += [flag, str(value)]
        return " ".join(shlex.quote(word) for word in words)

    def run_here(self) -> float:
        """Run the step in this process; returns its seconds."""
        started = time.perf_counter()
        getattr(self, "_" + self.command.replace("-", "_"))(**self.options)
        return time.perf_counter() - started

    def _train(
        self,
        *,
        method: str,
        preset: str,
        config: str,
        db: str,
        out: str,
        resume: bool = False,
        no_progress: bool = True,
    ) -> None:
        from ..config import load_config
        from ..training.run import run_training

        resolved = load_config(method=method, preset=preset, config_file=config, name=self.run)
        run_training(resolved, db=Path(db), out_root=Path(out), resume=resume, progress=not no_progress)

    def _generate(
        self, *, prompts: str, seeds: int, db: str, out: str, num_prompts: int | None = None, no_progress: bool = True
    ) -> None:
        from ..evaluation.generate import generate

        generate(
            self.run,
            prompt_set=prompts,
            db=Path(db),
            out_root=Path(out),
            seeds=seeds,
            num_prompts=num_prompts,
            progress=not no_progress,
        )

    def _score(self, *, metrics: str, db: str, no_progress: bool = True) -> None:
        from ..evaluation.score import score

        score(self.run, metrics=metrics, db=Path(db), progress=not no_progress)

    def _timestep_analysis(self, *, db: str, pairs: int, figure: str, no_progress: bool = True) -> None:
        from analysis.figures import plot_timestep

        from .timestep_analysis import analyse_run

        analyse_run(self.run, db=Path(db), num_pairs=pairs, progress=not no_progress)
        plot_timestep(Path(db), [self.run], analysis="reference", out=Path(figure))
