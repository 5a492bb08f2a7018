"""Baselines tuned alike (issue 25, rule 3 of ``regime_plan``): every method's main knob over a grid
of three values on the validation prompts, under one training seed, at the regime's (lr*, S*).

Three rounds, because each needs the one before: (1) Diffusion-DPO, SFT, DSPO, Diffusion-KTO and
MaPO; (2) refdpo's tau at Diffusion-DPO's tuned beta and the middle delta; (3) refdpo's delta at the
chosen tau. Each run is sampled on the validation prompts (one seed) and scored; the rule picks the
best mean ``human`` score. Resumable: finished runs are found in the store and skipped.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import RefbenchError
from . import regime_plan as rule
from .sweep import RunSpec

__all__ = ["tune", "tuning_specs", "TUNED_METHODS"]

TUNED_METHODS = ("diff-dpo", "sft", "dspo", "diff-kto", "mapo")


def _spec(
    method: str, preset: str, label: str, overrides: dict, lr: float, steps: int, extra: dict | None = None
) -> RunSpec:
    sections = {section: dict(values) for section, values in overrides.items()}
    for section, values in (extra or {}).items():
        sections.setdefault(section, {}).update(values)
    return RunSpec(
        f"tune-{method}-{label}", preset, rule.regime_overrides(lr, steps=steps, seed=rule.TUNING_SEED, extra=sections)
    )


def tuning_specs(
    lr: float, steps: int, dpo_divergence: float, *, beta: float | None = None, tau: int | None = None
) -> dict[str, list[RunSpec]]:
    """Round 1's grids (method -> specs); with ``beta`` (Diffusion-DPO's tuned) also refdpo's tau
    round, and with ``tau`` too its delta round (names shared, so the run of both is trained once)."""
    grids = rule.tuning_grids(lr, dpo_divergence)
    specs = {
        method: [_spec(method, method, label, overrides, lr, steps) for label, overrides in grids[method]]
        for method in TUNED_METHODS
    }
    if beta is not None:

        def ours(overrides: dict) -> RunSpec:
            method = overrides["method"]
            label = f"tau{method['tau']}-delta{method['delta'] / dpo_divergence:g}D"
            return _spec("refdpo", "refdpo", label, {"method": {**method, "beta": beta}}, lr, steps)

        specs["refdpo-tau"] = [ours(overrides) for _, overrides in grids["refdpo-tau"]]
        if tau is not None:
            specs["refdpo-delta"] = [
                ours({"method": {**overrides["method"], "tau": tau}}) for _, overrides in grids["refdpo-delta"]
            ]
    return specs


def _run_round(
    specs: list[RunSpec],
    *,
    db: Path,
    out_root: Path,
    jobs: int,
    threads: int,
    progress: bool,
    timings: dict,
    num_prompts: int | None = None,
) -> None:
    from analysis.reads import mean_scores

    from ..store import Store
    from .regime import validation_steps
    from .sweep import run_specs, spec_status

    store = Store(db)
    scored = set(mean_scores(store, [s.name for s in specs], prompt_set=rule.VALIDATION, metrics=["human"])["run"])
    if all(s.name in scored and spec_status(s, store) == "finished" for s in specs):
        return  # trained and scored already (a rerun, or a round whose runs an earlier round made): no workers to start
    del store
    outcomes = run_specs(
        specs,
        db=db,
        out_root=out_root,
        jobs=jobs,
        threads=threads,
        progress=progress,
        then=lambda spec: validation_steps([spec.name], db=db, out_root=out_root, num_prompts=num_prompts),
        timings=timings,
    )
    failed = {name: outcome for name, outcome in outcomes.items() if outcome not in ("trained", "done", "skipped")}
    if failed:
        name, outcome = next(iter(failed.items()))
        raise RefbenchError(
            f"{len(failed)} tuning runs failed, e.g. {name}: {outcome}; run the same command again to resume"
        )


def _choose(db: Path, specs: list[RunSpec]) -> tuple[RunSpec, list[float]]:
    from analysis.reads import mean_scores

    scores = mean_scores(db, [s.name for s in specs], prompt_set=rule.VALIDATION, metrics=["human"])
    by_run = dict(zip(scores["run"], scores["mean"]))
    missing = [s.name for s in specs if s.name not in by_run]
    if missing:
        raise RefbenchError(f"no validation scores for {missing[0]}; run the same command again")
    values = [float(by_run[s.name]) for s in specs]
    return specs[rule.choose_tuned(values)], values


def tune(
    *,
    lr: float,
    steps: int,
    dpo_divergence: float,
    db: Path,
    out_root: Path,
    jobs: int = 2,
    threads: int = 1,
    progress: bool = True,
    timings: dict | None = None,
    num_prompts: int | None = None,
) -> tuple[dict[str, dict], list[dict]]:
    """(method -> the chosen config overrides, one row per tuning run: method, run, value, score, chosen)."""
    timings = {} if timings is None else timings
    rounds = {
        "db": db,
        "out_root": out_root,
        "jobs": jobs,
        "threads": threads,
        "progress": progress,
        "timings": timings,
        "num_prompts": num_prompts,
    }
    chosen: dict[str, dict] = {}
    rows: list[dict] = []

    def settle(method: str, specs: list[RunSpec], knob) -> RunSpec:
        best, values = _choose(db, specs)
        rows.extend(
            {"method": method, "run": s.name, "setting": knob(s), "validation_human": v, "chosen": s is best}
            for s, v in zip(specs, values)
        )
        return best

    round_one = tuning_specs(lr, steps, dpo_divergence)
    _run_round([s for specs in round_one.values() for s in specs], **rounds)
    for method, specs in round_one.items():
        knob = (
            (lambda s: f"lr {s.overrides['training']['learning_rate']:g}")
            if method == "sft"
            else (lambda s: f"beta {s.overrides['method']['beta']:g}")
        )
        best = settle(method, specs, knob)
        chosen[method] = (
            {k: v for k, v in best.overrides.items() if k in ("method",)}
            if method != "sft"
            else {"training": {"learning_rate": best.overrides["training"]["learning_rate"]}}
        )
    beta = chosen["diff-dpo"]["method"]["beta"]
    refdpo_knob = lambda s: f"tau {s.overrides['method']['tau']}, delta {s.overrides['method']['delta']:.3g}"  # noqa: E731
    tau_specs = tuning_specs(lr, steps, dpo_divergence, beta=beta)["refdpo-tau"]
    _run_round(tau_specs, **rounds)
    tau = settle("refdpo (tau)", tau_specs, refdpo_knob).overrides["method"]["tau"]
    delta_specs = tuning_specs(lr, steps, dpo_divergence, beta=beta, tau=tau)["refdpo-delta"]
    _run_round(delta_specs, **rounds)
    best = settle("refdpo (delta)", delta_specs, refdpo_knob)
    chosen["refdpo"] = {"method": {"tau": tau, "delta": best.overrides["method"]["delta"]}}
    return chosen, rows
