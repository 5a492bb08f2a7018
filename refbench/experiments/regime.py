"""`refbench calibrate`: rule 2 of ``regime_plan``, Diffusion-DPO's validation curve.

Trains Diffusion-DPO at every learning rate of ``CURVE_LRS`` under the seeds ``CURVE_SEEDS`` in
the regime (``STEPS`` steps on ``PAIRS`` pairs, validation prompts left out), each run saving
snapshots at ``CURVE_SNAPSHOTS``; samples and scores the runs, their snapshots and the base model
on the validation prompts; applies the rule and writes ``results/regime/``: the curve (csv,
markdown, figure) and ``decision.json`` (lr*, S*, Diffusion-DPO's divergence there, and whether
over-optimisation is shown). Resumable like every plan: finished work is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import regime_plan as rule
from .sweep import RunSpec

__all__ = ["curve_specs", "curve_points", "calibrate", "validation_steps"]


def curve_specs() -> list[RunSpec]:
    return [
        RunSpec(
            f"curve-diff-dpo-lr{lr:g}-seed{seed}",
            "diff-dpo",
            rule.regime_overrides(lr, snapshots=rule.CURVE_SNAPSHOTS, seed=seed),
        )
        for seed in rule.CURVE_SEEDS
        for lr in rule.CURVE_LRS
    ]


def curve_points(specs: list[RunSpec]) -> dict[str, tuple[float, int, int]]:
    """Run (or snapshot run) -> (lr, steps, seed)."""
    from ..training.run import snapshot_name

    points = {}
    for spec in specs:
        training = spec.overrides["training"]
        lr, seed = training["learning_rate"], training["seed"]
        for step in training.get("snapshot_steps", []):
            points[snapshot_name(spec.name, step)] = (lr, step, seed)
        points[spec.name] = (lr, training["max_steps"], seed)
    return points


def validation_steps(runs: list[str], *, db: Path, out_root: Path, num_prompts: int | None = None) -> list:
    """Samples of each run on the validation prompts (one seed each) and their oracle scores."""
    from ..evaluation.winrates import TOY_METRICS
    from .steps import Step

    steps = []
    for run in runs:
        steps += [
            Step(
                "generate",
                run,
                {
                    "prompts": rule.VALIDATION,
                    "seeds": rule.VALIDATION_EVAL_SEEDS,
                    "num_prompts": num_prompts,
                    "db": str(db),
                    "out": str(out_root),
                    "no_progress": True,
                },
            ),
            Step("score", run, {"metrics": ",".join(TOY_METRICS), "db": str(db), "no_progress": True}),
        ]
    return steps


def evaluate_base(*, db: Path, out_root: Path, progress: bool) -> None:
    from ..evaluation.generate import generate
    from ..evaluation.score import score
    from ..evaluation.winrates import TOY_METRICS

    generate(
        "base",
        prompt_set=rule.VALIDATION,
        db=db,
        out_root=out_root,
        seeds=rule.VALIDATION_EVAL_SEEDS,
        progress=progress,
    )
    score("base", metrics=",".join(TOY_METRICS), db=db, progress=False)


def calibrate(
    *, results: Path, db: Path, out_root: Path, jobs: int = 2, threads: int = 1, progress: bool = True
) -> dict:
    from analysis.regime import curve_frame, curve_summary, plot_curve

    from ..errors import RefbenchError
    from ..toy.dataset import ensure_toy_pairs
    from .sweep import run_specs

    results, db, out_root = Path(results), Path(db), Path(out_root)
    results.mkdir(parents=True, exist_ok=True)
    ensure_toy_pairs()
    specs = curve_specs()
    points = curve_points(specs)

    def then(spec):
        return validation_steps(
            [run for run in points if run.rsplit(".step", 1)[0] == spec.name], db=db, out_root=out_root
        )

    outcomes = run_specs(specs, db=db, out_root=out_root, jobs=jobs, threads=threads, progress=progress, then=then)
    failed = {name: outcome for name, outcome in outcomes.items() if outcome not in ("trained", "done", "skipped")}
    if failed:
        raise RefbenchError(
            f"{len(failed)} curve runs failed, e.g. {next(iter(failed))}: {next(iter(failed.values()))}; "
            f"run the same command again to resume"
        )
    evaluate_base(db=db, out_root=out_root, progress=progress)
    frame = curve_frame(db, points)
    runs_only = frame[frame["steps"] > 0]
    scores = {
        (lr, steps): list(group.sort_values("seed")["human"])
        for (lr, steps), group in runs_only.groupby(["lr", "steps"])
    }
    chosen = rule.choose_curve_point(scores)
    test = rule.over_optimisation(scores, chosen)
    at_chosen = runs_only[(runs_only["lr"] == chosen[0]) & (runs_only["steps"] == chosen[1])]
    decision = {
        "learning_rate": chosen[0],
        "steps": chosen[1],
        "dpo_divergence": float(at_chosen["div_policy"].mean()),
        "validation_human": float(at_chosen["human"].mean()),
        "over_optimisation_shown": bool(test["shown"]),
        "over_optimisation": {
            axis: {"point": list(v["point"]), "difference": v["difference"], "p": v["p"]}
            for axis, v in test.items()
            if axis != "shown"
        },
        "base_validation_human": float(frame.loc[frame["steps"] == 0, "human"].mean()),
    }
    frame.to_csv(results / "curve.csv", index=False)
    plot_curve(frame, chosen=chosen, out=results / "curve.png")
    (results / "decision.json").write_text(json.dumps(decision, indent=1) + "\n")
    (results / "curve.md").write_text(_markdown(curve_summary(frame), decision))
    return decision


def _markdown(summary, decision: dict) -> str:
    lines = [
        "# Diffusion-DPO's validation curve (rule 2 of the regime)",
        "",
        f"Mean `human` score on the {rule.VALIDATION} prompts (one evaluation seed each) over training seeds "
        f"{', '.join(map(str, rule.CURVE_SEEDS))}; {rule.PAIRS} pairs, batch {rule.BATCH}: "
        f"{rule.STEPS} steps = {rule.STEPS * rule.BATCH / rule.PAIRS:.2f} epochs. Step 0 is the base model.",
        "",
        "| lr | steps | epochs | mean human | SD over seeds | D(policy, init) x1e3 |",
        "|---|---|---|---|---|---|",
    ]
    for row in summary.itertuples(index=False):
        sd = "" if row.sd != row.sd else f"{row.sd:.4f}"
        lines.append(
            f"| {row.lr:g} | {row.steps} | {row.steps * rule.BATCH / rule.PAIRS:.2f} | {row.mean:.4f} | {sd} | "
            f"{row.div_policy * 1e3:.3f} |"
        )
    shown = "shown" if decision["over_optimisation_shown"] else "not shown"
    lines += [
        "",
        f"Chosen by the rule: lr* = {decision['learning_rate']:g}, S* = {decision['steps']} steps (validation "
        f"human {decision['validation_human']:.4f}; base model {decision['base_validation_human']:.4f}); "
        f"Diffusion-DPO's D(policy, init) there: {decision['dpo_divergence'] * 1e3:.3f} x1e-3.",
        "",
        f"Over-optimisation is **{shown}** (one-sided t over the seeds' paired differences, alpha {rule.CURVE_ALPHA}):",
        "",
    ]
    for axis, value in decision["over_optimisation"].items():
        if value["p"] is None:
            lines.append(f"- {axis}: the chosen point is already the furthest; nothing to compare.")
        else:
            lines.append(
                f"- {axis}: chosen - (lr {value['point'][0]:g}, {value['point'][1]} steps) = "
                f"{value['difference']:+.4f}, p = {value['p']:.3f}"
            )
    return "\n".join(lines) + "\n"
