"""`refbench reproduce`: the toy world's version of every table and figure of the paper, into results/
(``--world toy-flow``: the flow-matching toy world's runs of Table 1, Fig. 1(b), 2 and 4, into
results/toy-flow/, and its verdicts beside the UNet world's in results/README.md).

Two regimes of the UNet toy world (``--regime``): "paper" (the default; ``regime_plan``: the
paper's data reuse at the learning rate and length Diffusion-DPO's curve chose, every method tuned
alike first, five training seeds) and "early" (``reproduce_plan.PLAN`` at the toy preset's 300
steps of fresh pairs, three seeds, into results/early-regime/).

Stages, each resumable (finished work is found in the store and skipped):
  0. (paper regime) tune every method's main knob on the validation prompts (``tuning.py``) and
     write RESULTS/tuning.md; build the plan's runs from the chosen values;
  1. train every run of the plan (``jobs`` at a time), then in the same job
     generate its toy-test samples, score them with the oracle metrics, and for the runs of
     Fig. 2 and Fig. 5 run the timestep analysis;
  2. the base model's samples and scores;
  3. win rates of refdpo against every baseline (Table 1);
  4. tables (markdown), figures (PNG), the store as parquet, and results/README.md, whose
     claims table is computed from the numbers (``analysis.claims``).
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import RefbenchError

__all__ = ["reproduce", "evaluation_steps"]


def evaluation_steps(
    spec,
    *,
    db: Path,
    out_root: Path,
    eval_seeds: int,
    num_prompts: int | None = None,
    timestep_pairs: int = 256,
    analysed: set = frozenset(),
) -> list:
    """What follows a plan run's training in its worker: its toy-test samples, their oracle
    scores, and for the runs of Fig. 2 and 5 the timestep analysis (unless ``analysed`` has it)."""
    from ..evaluation.winrates import TOY_METRICS
    from . import reproduce_plan as plan
    from .steps import Step

    steps = [
        Step(
            "generate",
            spec.name,
            {
                "prompts": "toy-test",
                "seeds": eval_seeds,
                "num_prompts": num_prompts,
                "db": str(db),
                "out": str(out_root),
                "no_progress": True,
            },
        ),
        Step("score", spec.name, {"metrics": ",".join(TOY_METRICS), "db": str(db), "no_progress": True}),
    ]
    if spec.name.rsplit("-seed", 1)[0] in plan.TIMESTEP_RUNS and spec.name not in analysed:
        steps.append(
            Step(
                "timestep-analysis",
                spec.name,
                {
                    "db": str(db),
                    "pairs": timestep_pairs,
                    "no_progress": True,
                    "figure": str(Path(out_root) / spec.name / "timestep.png"),
                },
            )
        )
    return steps


def _stage(name: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:7.0f} s] {name}", flush=True)


def reproduce(
    *,
    results: Path,
    db: Path,
    out_root: Path,
    jobs: int = 2,
    seeds: int | None = None,
    eval_seeds: int | None = None,
    max_steps: int | None = None,
    only: list[str] | None = None,
    timestep_pairs: int = 256,
    num_prompts: int | None = None,
    progress: bool = True,
    world: str = "toy",
    threads: int = 1,
    timings: dict | None = None,
    regime: str = "paper",
) -> dict:
    from ..evaluation.generate import generate
    from ..evaluation.score import score
    from ..evaluation.winrates import TOY_METRICS, compute_winrates
    from ..toy.dataset import ensure_toy_pairs
    from . import regime_plan as rule
    from . import reproduce_plan as plan
    from .sweep import run_specs

    started = time.perf_counter()
    if regime not in plan.REGIMES:
        raise RefbenchError(f"--regime must be one of {', '.join(plan.REGIMES)}; got {regime!r}")
    paper = regime == "paper" and world == "toy"  # the flow world has the early regime only
    seeds = (rule.MAIN_SEEDS if paper else plan.DEFAULT_TRAINING_SEEDS) if seeds is None else seeds
    eval_seeds = (rule.TEST_EVAL_SEEDS if paper else plan.EVAL_SEEDS) if eval_seeds is None else eval_seeds
    if seeds < 1 or eval_seeds < 1:
        raise RefbenchError("--seeds and --eval-seeds must be >= 1")
    if jobs < 1 or threads < 1:  # before any folder is made or pair built
        raise RefbenchError(f"--jobs and --threads must be >= 1; got {jobs} and {threads}")
    if world not in plan.WORLDS:
        raise RefbenchError(f"--world must be one of {', '.join(plan.WORLDS)}; got {world!r}")
    results, db, out_root = Path(results), Path(db), Path(out_root)
    try:
        results.mkdir(parents=True, exist_ok=True)
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RefbenchError(f"cannot create {exc.filename}: {exc.strerror}") from None
    _stage("toy preference pairs", started)
    ensure_toy_pairs()
    timings = {} if timings is None else timings
    untestable = ()
    if paper:
        _stage("tuning every method's main knob on the validation prompts (rule 3)", started)
        specs, untestable = _paper_specs(
            results=results,
            db=db,
            out_root=out_root,
            jobs=jobs,
            threads=threads,
            progress=progress,
            seeds=seeds,
            max_steps=max_steps,
            only=only,
            num_prompts=num_prompts,
        )
    else:
        specs = plan.plan_specs(max_steps=max_steps, only=only, seeds=seeds, world=world)
    from ..store import Store

    analysed = set(Store(db).query("SELECT DISTINCT run FROM timestep_stats WHERE analysis = 'reference'")["run"])

    def then(spec):
        return evaluation_steps(
            spec,
            db=db,
            out_root=out_root,
            eval_seeds=eval_seeds,
            num_prompts=num_prompts,
            timestep_pairs=timestep_pairs,
            analysed=analysed,
        )

    _stage(
        f"training, sampling and scoring {len(specs)} runs ({seeds} training seeds), {jobs} at a time, "
        f"{threads} thread(s) each",
        started,
    )
    stage_began = time.perf_counter()
    outcomes = run_specs(
        specs, db=db, out_root=out_root, jobs=jobs, threads=threads, progress=progress, then=then, timings=timings
    )
    costs = _report_costs(timings, db, wall=time.perf_counter() - stage_began, workers=jobs)
    failed = {name: outcome for name, outcome in outcomes.items() if outcome not in ("trained", "done", "skipped")}
    for name, outcome in failed.items():
        print(f"  {name}: {outcome} (log: {out_root / '_sweep' / (name + '.log')})", flush=True)
    done = [s.name for s in specs if s.name not in failed]

    _stage("base model samples and scores", started)
    generate(
        "base",
        prompt_set="toy-test",
        db=db,
        out_root=out_root,
        seeds=eval_seeds,
        num_prompts=num_prompts,
        progress=progress,
        preset=world,
    )
    score("base", metrics=",".join(TOY_METRICS), db=db, progress=False)

    _stage("win rates per training seed (Table 1)", started)
    for seed in range(seeds):
        run = plan.seeded_name(plan.TABLE1_RUN, seed)
        if run not in done:
            continue
        for _, baseline in plan.table1_rows(world):
            opponent = baseline if baseline == "base" else plan.seeded_name(baseline, seed)
            if baseline == "base" or opponent in done:
                compute_winrates(
                    run, opponent, db=db, out_root=out_root, seeds=eval_seeds, num_prompts=num_prompts, progress=False
                )

    _stage("tables, figures, parquet export, results/README.md", started)
    from analysis.report import write_report

    written = write_report(
        db, results, seconds=time.perf_counter() - started, failed=failed, world=world, untestable=untestable
    )
    _stage(f"done: {len(written)} files in {results}", started)
    return {"outcomes": outcomes, "written": written, "failed": failed, "costs": costs}


def _paper_specs(
    *,
    results: Path,
    db: Path,
    out_root: Path,
    jobs: int,
    threads: int,
    progress: bool,
    seeds: int,
    max_steps: int | None,
    only: list[str] | None,
    num_prompts: int | None,
):
    """The paper regime's tuning (written to RESULTS/tuning.md) and then its plan's specs under
    training seeds 0..seeds-1 (the Fig. 4-only runs under at most ``SWEEP_ONLY_SEEDS``), and the
    claims the world cannot test."""
    import pandas as pd

    from . import regime_plan as rule
    from .reproduce_plan import seeded_name
    from .sweep import RunSpec
    from .tuning import tune

    calibration = rule.CALIBRATION
    if calibration is None:
        raise RefbenchError(
            "the paper regime is not calibrated yet: run `refbench calibrate` (Diffusion-DPO's curve) "
            "and commit its decision in regime_plan.CALIBRATION, or use --regime early"
        )
    steps = calibration["steps"] if max_steps is None else max_steps
    chosen, rows = tune(
        lr=calibration["learning_rate"],
        steps=steps,
        dpo_divergence=calibration["dpo_divergence"],
        db=db,
        out_root=out_root,
        jobs=jobs,
        threads=threads,
        progress=progress,
        timings={},
        num_prompts=num_prompts,
    )
    table = pd.DataFrame(rows)
    table.to_csv(results / "tuning.csv", index=False)
    from analysis.tables import to_markdown

    (results / "tuning.md").write_text(
        f"# Tuning (rule 3 of the regime): validation `human` score, training seed {rule.TUNING_SEED}, "
        f"lr* {calibration['learning_rate']:g}, {steps} steps; the chosen value of each knob is marked\n\n"
        + to_markdown(
            table.assign(
                validation_human=table["validation_human"].map(lambda v: f"{v:.4f}"),
                chosen=table["chosen"].map(lambda c: "**chosen**" if c else ""),
            )
        )
        + "\n"
    )
    specs = []
    entries = [
        e for e in rule.paper_specs(calibration["learning_rate"], steps, chosen) if only is None or e.name in only
    ]
    for seed in range(seeds):
        for entry in entries:
            if entry.name in rule.SWEEP_ONLY and seed >= rule.SWEEP_ONLY_SEEDS:
                continue
            training = {**entry.overrides["training"], "seed": seed}
            specs.append(
                RunSpec(
                    seeded_name(entry.name, seed), entry.method, {**entry.overrides, "training": training}, entry.preset
                )
            )
    return specs, rule.untestable_claims()


def _report_costs(timings: dict, db: Path, *, wall: float, workers: int) -> dict | None:
    """Print where the runs' time went (the workers' seconds, per run on average)."""
    from ..store import Store
    from .plan_costs import KINDS, split_seconds

    if not timings:
        return None
    loop = Store(db).query("SELECT run, seconds FROM run_costs WHERE kind = 'total'")
    costs = split_seconds(timings, dict(zip(loop["run"], loop["seconds"])), wall=wall, workers=workers)
    count = len(costs["runs"])
    parts = ", ".join(f"{kind} {costs['totals'][kind] / count:.1f}" for kind in KINDS)
    print(
        f"  {count} runs in {wall / 60:.1f} min; seconds per run: {parts}, other (start-up, loading) "
        f"{costs['other_per_run']:.1f}, workers idle {costs['idle'] / count:.1f}",
        flush=True,
    )
    return costs
