"""Where a reproduction's time goes, per run: the long-lived plan workers at --jobs 1 and 2, against
one process per step (how `refbench reproduce` ran its runs before issue 24), on one short plan.

    python benchmarks/reproduce_speed.py            # about 10 minutes on 2 cores
    python benchmarks/reproduce_speed.py --quick    # 2 runs, a few minutes

Each mode trains, samples, scores and analyses the same runs into a store of its own; the modes
run one after another in one invocation (repeats alternate their order), so the machine's state
is shared. Per run: training (the trainer's own clock), sampling, scoring, timestep analysis, and
"other" = the runs' wall time minus those four: start-up, imports, loading models and data,
store writes; "idle" = the rest of wall x workers (a worker waiting for the last run). Writes benchmarks/reproduce_speed.json and the
"Reproduce speed" section of benchmarks/RESULTS.md. Needs no network (the toy world is in the
package).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MARK_START, MARK_END = "<!-- reproduce-speed:start -->", "<!-- reproduce-speed:end -->"
PLAN = ["refdpo", "diff-dpo", "sft", "ref-explore"]  # ref-explore has a timestep analysis too


def _plan(root: Path, runs: list[str], max_steps: int, num_prompts: int):
    from refbench.experiments import reproduce_plan as plan
    from refbench.experiments.reproduce import evaluation_steps

    db, out = root / "store.duckdb", root / "runs"
    specs = plan.plan_specs(max_steps=max_steps, only=runs, seeds=1)

    def then(spec):
        return evaluation_steps(spec, db=db, out_root=out, eval_seeds=1, num_prompts=num_prompts, timestep_pairs=64)

    return specs, then, db, out


def run_workers(root: Path, jobs: int, **plan_args) -> tuple[dict, float]:
    from refbench.experiments.sweep import run_specs

    specs, then, db, out = _plan(root, **plan_args)
    timings: dict = {}
    began = time.perf_counter()
    outcomes = run_specs(specs, db=db, out_root=out, jobs=jobs, threads=1, progress=False, then=then, timings=timings)
    wall = time.perf_counter() - began
    _check(outcomes)
    return timings, wall


def run_processes(root: Path, **plan_args) -> tuple[dict, float]:
    """The former runner at --jobs 1: every step its own `refbench` process, one thread."""
    from refbench.experiments.steps import Step
    from refbench.experiments.sweep import _config_file

    specs, then, db, out = _plan(root, **plan_args)
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    timings: dict = {}
    began = time.perf_counter()
    for spec in specs:
        train = Step(
            "train",
            spec.name,
            {
                "method": spec.method,
                "preset": spec.preset,
                "no_progress": True,
                "config": str(_config_file(spec, out / "_sweep")),
                "db": str(db),
                "out": str(out),
            },
        )
        seconds = {}
        for step in [train, *then(spec)]:
            step_began = time.perf_counter()
            command = [sys.executable, "-m", "refbench", *shlex.split(step.command_line())[1:]]
            done = subprocess.run(command, env=environment, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{step.command_line()} failed: {done.stderr.strip()[-300:]}")
            seconds[step.command] = time.perf_counter() - step_began
        timings[spec.name] = {**seconds, "wall": sum(seconds.values())}
    return timings, time.perf_counter() - began


def _check(outcomes: dict) -> None:
    bad = {k: v for k, v in outcomes.items() if v not in ("trained", "done")}
    if bad:
        raise SystemExit(f"runs failed: {bad}")


def split(root: Path, timings: dict, wall: float, workers: int) -> dict:
    from refbench.experiments.plan_costs import split_seconds
    from refbench.store import Store

    loop = Store(root / "store.duckdb").query("SELECT run, seconds FROM run_costs WHERE kind = 'total'")
    return split_seconds(timings, dict(zip(loop["run"], loop["seconds"])), wall=wall, workers=workers)


def markdown(result: dict) -> str:
    kinds = ("training", "sampling", "scoring", "analysis")
    lines = [
        MARK_START,
        "## Reproduce speed: long-lived plan workers (issue 24)",
        "",
        f"`python benchmarks/reproduce_speed.py{' --quick' if result['quick'] else ''}` on {result['machine']}: "
        f"runs {', '.join(result['plan'])} at {result['max_steps']} steps, each sampled on {result['num_prompts']} "
        f"toy-test prompts x 1 seed and scored; {', '.join(result['analysed'])} also get a timestep analysis (64 "
        "pairs). Seconds per run (mean over runs, "
        f'{result["repeats"]} repeat(s), modes alternating); "other" = the runs\' wall time - the four measured parts '
        '(start-up, imports, loading), "idle" = wall x workers - the runs\' wall time.',
        "",
        "| mode | wall s | per run | " + " | ".join(kinds) + " | other | idle |",
        "|---|---|---|" + "---|" * len(kinds) + "---|---|",
    ]
    for mode, costs in result["modes"].items():
        count = len(costs["runs"])
        lines.append(
            f"| {mode} | {costs['wall']:.1f} | {_per_run(costs):.1f} | "
            + " | ".join(f"{costs['totals'][k] / count:.1f}" for k in kinds)
            + f" | {costs['other_per_run']:.1f} | {costs['idle'] / count:.1f} |"
        )
    modes = result["modes"]
    workers, processes = _per_run(modes["workers, --jobs 1"]), _per_run(modes["one process per step, --jobs 1"])
    lines += [
        "",
        '"per run" = wall x workers / runs. A step run as its own process counts its start-up (interpreter, '
        "imports, loading) in its own column, so the comparison with one process per step is the per-run total: "
        f"**{processes - workers:.1f} s more per run** ({processes:.1f} against {workers:.1f} s at --jobs 1), with "
        f"the same training seconds. Wall, --jobs 1 over --jobs 2: **{result['ratios']['wall_jobs1_over_jobs2']:.2f}**.",
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


def _per_run(costs: dict) -> float:
    return costs["wall"] * min(costs["workers"], len(costs["runs"])) / len(costs["runs"])


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.is_file() else "# Benchmark results\n"
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        text = head + section + rest.split(MARK_END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 runs of 20 steps on 8 prompts")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "reproduce_speed.json")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--render", action="store_true", help="only rewrite RESULTS.md's section from --out's JSON")
    args = parser.parse_args()
    if args.render:
        result = json.loads(args.out.read_text())
        write_section(args.results, markdown(result))
        print(markdown(result))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    plan_args = {
        "runs": PLAN[:2] if args.quick else PLAN,
        "max_steps": 20 if args.quick else 60,
        "num_prompts": 8 if args.quick else 16,
    }
    modes = {
        "workers, --jobs 1": lambda root: run_workers(root, 1, **plan_args),
        "workers, --jobs 2": lambda root: run_workers(root, 2, **plan_args),
        "one process per step, --jobs 1": lambda root: run_processes(root, **plan_args),
    }
    workers = {"workers, --jobs 1": 1, "workers, --jobs 2": 2, "one process per step, --jobs 1": 1}
    collected: dict[str, list] = {mode: [] for mode in modes}
    order = list(modes)
    for repeat in range(args.repeats):
        for mode in order if repeat % 2 == 0 else order[::-1]:
            with tempfile.TemporaryDirectory() as folder:
                print(f"repeat {repeat + 1}: {mode}", file=sys.stderr, flush=True)
                timings, wall = modes[mode](Path(folder))
                collected[mode].append(split(Path(folder), timings, wall, workers[mode]))
    summary = {mode: min(costs, key=lambda c: c["wall"]) for mode, costs in collected.items()}  # the least disturbed
    from refbench.experiments.reproduce_plan import TIMESTEP_RUNS

    result = {
        "analysed": [run for run in plan_args["runs"] if run in TIMESTEP_RUNS],
        "quick": args.quick,
        "repeats": args.repeats,
        "plan": plan_args["runs"],
        "max_steps": plan_args["max_steps"],
        "num_prompts": plan_args["num_prompts"],
        "machine": f"{os.cpu_count()} CPU cores",
        "modes": summary,
        "ratios": {
            "other_processes_over_workers": summary["one process per step, --jobs 1"]["other_per_run"]
            / max(1e-9, summary["workers, --jobs 1"]["other_per_run"]),
            "wall_jobs1_over_jobs2": summary["workers, --jobs 1"]["wall"] / summary["workers, --jobs 2"]["wall"],
        },
    }
    args.out.write_text(json.dumps(result, indent=1))
    write_section(args.results, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
