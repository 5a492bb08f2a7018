"""`refbench winrate RUN --baseline NAME`: Table 1-style win rates from the store.

Samples of the run and of the baseline are paired by (prompt set, prompt, seed), whatever
order their rows were written in; each metric's win rate comes with a bootstrap 95%
interval and both models' mean raw scores. Results go to ``winrates``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import RefbenchError
from ..method.winrate import WinRate, paired_win_rate
from ..store import Store, now

TOY_METRICS = ("human", "colour", "count", "shape", "aesthetic")  # the toy's five "reward models"

PAIRED_SCORES = """
SELECT r.prompt, r.seed, rs.value AS run_value, bs.value AS baseline_value
FROM samples r
JOIN samples b ON b.prompt_set = r.prompt_set AND b.prompt = r.prompt AND b.seed = r.seed
JOIN scores rs ON rs.sample_id = r.sample_id AND rs.metric = ?
JOIN scores bs ON bs.sample_id = b.sample_id AND bs.metric = ?
WHERE r.run = ? AND b.run = ? AND r.prompt_set = ?
ORDER BY r.prompt, r.seed
"""


def paired_scores(store: Store, run: str, baseline: str, prompt_set: str, metric: str):
    return store.query(PAIRED_SCORES, [metric, metric, run, baseline, prompt_set])


def _missing(store: Store, name: str, prompt_set: str, wanted: int, metrics: list[str], flags: str) -> str | None:
    """A sentence saying which command to run, or None when samples and scores are all there."""
    have = store.query("SELECT count(*) AS n FROM samples WHERE run = ? AND prompt_set = ?", [name, prompt_set])["n"][0]
    if have < wanted:
        return (
            f"{name} has {have} of {wanted} samples on {prompt_set}: run "
            f"`refbench generate {name} --prompts {prompt_set}{flags}` (or add --auto)"
        )
    for metric in metrics:
        scored = store.query(
            "SELECT count(*) AS n FROM scores JOIN samples USING (sample_id) WHERE run = ? AND prompt_set = ? "
            "AND metric = ?",
            [name, prompt_set, metric],
        )["n"][0]
        if scored < have:
            return f"{name} lacks {metric} scores: run `refbench score {name} --metrics {metric}` (or add --auto)"
    return None


def winrate_model(run: str, *, db: Path, preset: str | None, model: str | None) -> tuple[str, str | None]:
    """(preset, model) that 'base' (and a --unet) are sampled with: those asked, else RUN's own model
    (a training run's preset and pretrained source), else the toy."""
    record = Store(db, create=False).get_run(run)
    if preset is not None or record is None:
        return preset or "toy", model
    config_model = (record.get("config") or {}).get("model", {})
    return record.get("preset") or config_model.get("kind") or "toy", model or config_model.get("pretrained")


def winrate_defaults(
    run: str, *, db: Path, preset: str | None, model: str | None, prompt_set: str | None
) -> tuple[str, str | None, str]:
    """(preset, model, prompt set) of `refbench winrate`: those asked, else RUN's (``winrate_model``)
    and its kind's default prompt set (toy-test for the toy worlds, partiprompts for real models)."""
    from .generate import default_prompt_set

    preset, model = winrate_model(run, db=db, preset=preset, model=model)
    if prompt_set is None:
        prompt_set = default_prompt_set(run, Store(db, create=False), preset=preset, model=model)
    return preset, model, prompt_set


def compute_winrates(
    run: str,
    baseline: str,
    *,
    db: Path,
    out_root: Path,
    prompt_set: str = "toy-test",
    metrics: list[str] | None = None,
    seeds: int = 1,
    num_prompts: int | None = None,
    auto: bool = False,
    progress: bool = True,
    resamples: int = 2000,
    steps: int | None = None,
    guidance_scale: float | None = None,
    preset: str | None = None,
    model: str | None = None,
    unet: str | None = None,
) -> list[WinRate]:
    """Win rates of ``run`` against ``baseline``; with ``auto`` their missing samples and scores are made
    first ('base' and ``unet`` from ``preset`` / ``model``; ``unet``: RUN's samples come from that denoiser)."""
    from .generate import generate, prompt_texts
    from .metrics import get_metric
    from .score import score

    if unet is not None and not auto:  # without --auto nothing is generated: --unet would be ignored
        raise RefbenchError("--unet: only with --auto (it names the UNet that makes RUN's missing samples)")
    metrics = list(metrics or TOY_METRICS)
    store = Store(db, create=False)  # it reads what an earlier command wrote: a missing store is a mistyped --db
    preset, model = winrate_model(run, db=db, preset=preset, model=model)
    wanted = len(prompt_texts(prompt_set)[:num_prompts]) * seeds
    for name in (run, baseline):
        if auto:
            generate(
                name,
                prompt_set=prompt_set,
                db=db,
                out_root=out_root,
                seeds=seeds,
                num_prompts=num_prompts,
                progress=progress,
                steps=steps,
                guidance_scale=guidance_scale,
                preset=preset,
                model=model,
                unet=unet if name == run else None,
            )
            score(name, metrics=",".join(metrics), db=db, progress=progress)
        flags = (f" --seeds {seeds}" if seeds != 1 else "") + (f" --num-prompts {num_prompts}" if num_prompts else "")
        problem = _missing(store, name, prompt_set, wanted, metrics, flags)
        if problem:
            raise RefbenchError(problem)
    from .protocol import check_protocol

    check_protocol(store, run, baseline, prompt_set, metrics)  # refuses pairs sampled or scored differently
    results = []
    for metric in metrics:
        pairs = paired_scores(store, run, baseline, prompt_set, metric)
        if pairs.empty:
            raise RefbenchError(f"no (prompt, seed) pairs shared by {run} and {baseline} on {prompt_set}")
        results.append(
            paired_win_rate(
                metric,
                pairs["run_value"].to_numpy(),
                pairs["baseline_value"].to_numpy(),
                higher_is_better=get_metric(metric).higher_is_better,
                resamples=resamples,
            )
        )
    stamp = now()
    store.upsert(
        "winrates",
        [
            {
                "run": run,
                "baseline": baseline,
                "metric": r.metric,
                "prompt_set": prompt_set,
                "n": r.n,
                "rate": r.rate,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "mean_run": r.mean_run,
                "mean_baseline": r.mean_baseline,
                "created_at": stamp,
            }
            for r in results
        ],
    )
    return results


def winrate_protocol(run: str, baseline: str, *, db: Path, prompt_set: str, metrics: list[str]) -> list[str]:
    """The protocol the two runs' paired samples share, as the lines `refbench winrate` prints."""
    from .protocol import check_protocol, protocol_lines

    return protocol_lines(check_protocol(Store(db), run, baseline, prompt_set, metrics), prompt_set)


def winrate_frames(run: str, baseline: str, results: list[WinRate]):
    """Two tables: the paper's Table 1 row (win rates in %, with CI) and the raw mean scores."""
    import pandas as pd

    cells = {r.metric: f"{100 * r.rate:.1f} [{100 * r.ci_low:.1f}, {100 * r.ci_high:.1f}]" for r in results}
    # The toy's human is the weighted sum of its other oracles: an average with them would count
    # them twice, so it averages the others (real reward models are separate models: all of them).
    averaged = [r.rate for r in results if r.metric != "human"] or [r.rate for r in results]
    cells["avg"] = f"{100 * np.mean(averaged):.1f}"
    table = pd.DataFrame([{"": f"{run} vs. {baseline}", **cells}])
    means = pd.DataFrame(
        [
            {"metric": r.metric, "n": r.n, f"mean {run}": r.mean_run, f"mean {baseline}": r.mean_baseline}
            for r in results
        ]
    )
    return table, means
