"""Coverage of the claims' 95% intervals on simulated data shaped like the committed results (issue 25).

1. Variance components, from ``results/early-regime/data/`` (the early-regime reproduction's 60 runs: NAME-seedK, 42 toy-test
   prompts x 2 evaluation seeds each): for every score comparison the claims make, the paired
   ``human`` differences d[s, p, e] (training seed, prompt, evaluation seed) are split by a
   balanced random-effects ANOVA into

       d = mu + a[s] + b[p] + u[p, e] + c[s, p] + r[s, p, e]

   a: between training seeds; b: between prompts (shared by every seed); u: between evaluation
   seeds of one prompt (the same noise under every training seed, so also shared); c: seed x
   prompt; r: residual. Each is a method-of-moments estimate (mean squares against their
   expectations); the simulation uses their mean over the comparisons (variances averaged, a
   negative mean set to 0), and several between-seed SDs around the measured ones.
2. Simulation: R data sets of S x 42 x 2 normal paired differences with known mean mu, at S = 3
   and 5 training seeds, and R sets of S values per run for claims measured once per run.
3. Coverage: how often each nominal 95% interval holds mu (Monte-Carlo SE sqrt(c (1 - c) / R)):
   - ``hierarchical bootstrap`` (today, ``analysis.seeds.compare`` / ``seed_level``: seeds, then
     paired samples independently inside each seed; 2,000 resamples);
   - ``crossed bootstrap``: seeds and prompts (with their evaluation seeds) resampled jointly,
     percentile, no small-sample correction;
   - ``t over seed means``: Student t on the S seed means, prompts ignored;
   - ``crossed t, Satterthwaite``: the unbiased crossed variance with one t quantile at
     Satterthwaite's degrees of freedom;
   - ``crossed t``: ``refbench.method.inference.crossed_interval`` (the chosen method: the seed
     means' variance with t_{S-1}, the shared prompts' with t_{P-1});
   - once per run: the bootstrap over S values (today) against ``t_interval``.
   Win rates (outcome 1 when d > 0) get the same intervals; their truth is P(d > 0).

Usage: OMP_NUM_THREADS=1 python benchmarks/coverage.py [--reps 2000] [--out benchmarks/coverage.json]
(about 5 minutes on one core). Writes the JSON and ``benchmarks/coverage.md`` (``--render``: the
markdown again from the JSON, nothing simulated).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from refbench.method.hierarchical import hierarchical_bootstrap
from refbench.method.inference import crossed_interval, t_interval, t_quantile

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "results" / "early-regime" / "data"  # the early regime: 3 seeds x 42 prompts x 2 evaluation seeds
PROMPTS, EVALS = 42, 2
SEED_COUNTS = (3, 5)
# The score comparisons of analysis/claims.py (Tables 1, 3, 4, Fig. 4), A - B on mean human score.
PAIRS = [
    ("refdpo", "sft"),
    ("refdpo", "diff-dpo"),
    ("refdpo", "dspo"),
    ("refdpo", "diff-kto"),
    ("refdpo", "mapo"),
    ("diff-dpo", "diff-dpo-lr5x"),
    ("refdpo", "diff-dpo-beta1000"),
    ("ref-reinit", "diff-dpo"),
    ("refdpo", "ref-reinit"),
    ("diff-dpo", "timestep-only"),
    ("ref-explore", "diff-dpo"),
    ("refdpo", "ref-explore"),
    ("refdpo-gamma0.8", "refdpo-gamma0.8-constant"),
    ("refdpo", "refdpo-constant"),
    ("refdpo-noreg-tau16", "refdpo-noreg-tau4"),
    ("refdpo-tau4", "diff-dpo"),
    ("refdpo-tau16", "diff-dpo"),
]
COMPONENTS = ("seed", "prompt", "eval_seed", "seed_x_prompt", "residual")


# -- 1. variance components ---------------------------------------------------------------------------
def load_cubes(metric: str = "human") -> dict[str, np.ndarray]:
    """family -> scores (seed, prompt, evaluation seed), prompts and evaluation seeds in one order."""
    samples = pd.read_parquet(DATA / "samples.parquet", columns=["sample_id", "run", "prompt", "seed"])
    scores = pd.read_parquet(DATA / "scores.parquet", columns=["sample_id", "metric", "value"])
    frame = samples.merge(scores[scores["metric"] == metric], on="sample_id")
    frame = frame[frame["run"].str.contains(r"-seed\d+$")]
    frame["family"] = frame["run"].str.replace(r"-seed\d+$", "", regex=True)
    frame["training_seed"] = frame["run"].str.extract(r"-seed(\d+)$")[0].astype(int)
    cubes = {}
    for family, group in frame.groupby("family"):
        table = group.pivot_table(index=["training_seed", "prompt"], columns="seed", values="value").sort_index()
        seeds = table.index.get_level_values(0).unique()
        cubes[family] = table.to_numpy().reshape(len(seeds), -1, table.shape[1])
    return cubes


def components(d: np.ndarray) -> dict[str, float]:
    """Method-of-moments variances of a balanced (seed, prompt, evaluation seed) table (may be < 0)."""
    s, p, e = d.shape
    grand = d.mean()
    m_s, m_p, m_pe, m_sp = d.mean(axis=(1, 2)), d.mean(axis=(0, 2)), d.mean(axis=0), d.mean(axis=2)
    ms_s = p * e * ((m_s - grand) ** 2).sum() / (s - 1)
    ms_p = s * e * ((m_p - grand) ** 2).sum() / (p - 1)
    ms_ep = s * ((m_pe - m_p[:, None]) ** 2).sum() / (p * (e - 1))
    ms_sp = e * ((m_sp - m_s[:, None] - m_p[None, :] + grand) ** 2).sum() / ((s - 1) * (p - 1))
    ms_r = ((d - m_sp[:, :, None] - m_pe[None] + m_p[None, :, None]) ** 2).sum() / ((s - 1) * p * (e - 1))
    return {
        "seed": (ms_s - ms_sp) / (p * e),
        "prompt": (ms_p - ms_sp - ms_ep + ms_r) / (s * e),
        "eval_seed": (ms_ep - ms_r) / s,
        "seed_x_prompt": (ms_sp - ms_r) / e,
        "residual": ms_r,
    }


def measured_components(metric: str = "human") -> tuple[list[dict], dict[str, float]]:
    cubes = load_cubes(metric)
    rows = []
    for a, b in PAIRS:
        d = cubes[a] - cubes[b]
        var = components(d)
        rows.append(
            {
                "pair": f"{a} - {b}",
                "effect": float(d.mean()),
                "seed_means": [float(v) for v in d.mean(axis=(1, 2))],
                "sd": {k: float(math.copysign(math.sqrt(abs(v)), v)) for k, v in var.items()},
            }
        )
    pooled = {
        k: math.sqrt(max(0.0, float(np.mean([math.copysign(r["sd"][k] ** 2, r["sd"][k]) for r in rows]))))
        for k in COMPONENTS
    }
    return rows, pooled


# -- 2. simulation ----------------------------------------------------------------------------------------
def simulate(rng, reps: int, seeds: int, sd: dict[str, float], mu: float) -> np.ndarray:
    """(reps, seeds, prompts, evaluation seeds) paired differences with mean ``mu``."""
    shape = (reps, seeds, PROMPTS, EVALS)
    return (
        mu
        + sd["seed"] * rng.standard_normal((reps, seeds, 1, 1))
        + sd["prompt"] * rng.standard_normal((reps, 1, PROMPTS, 1))
        + sd["eval_seed"] * rng.standard_normal((reps, 1, PROMPTS, EVALS))
        + sd["seed_x_prompt"] * rng.standard_normal((reps, seeds, PROMPTS, 1))
        + sd["residual"] * rng.standard_normal(shape)
    )


def crossed_bootstrap(cube: np.ndarray, rng, resamples: int = 1000) -> tuple[float, float]:
    """Percentile interval resampling seeds and prompts jointly (a prompt keeps its evaluation seeds)."""
    cells = cube.mean(axis=2)
    s, p = cells.shape
    w_s = rng.multinomial(s, np.full(s, 1 / s), size=resamples)
    w_p = rng.multinomial(p, np.full(p, 1 / p), size=resamples)
    means = ((w_s @ cells) * w_p).sum(axis=1) / (s * p)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def satterthwaite(cube: np.ndarray) -> tuple[float, float]:
    """One t quantile on se^2 = (MS_S + MS_P - MS_SP) / (S P), a negative component dropped, with
    Satterthwaite's degrees of freedom: the alternative the study rejects (liberal at 3 seeds)."""
    cells = cube.mean(axis=2)
    s, p = cells.shape
    grand, m_s, m_p = cells.mean(), cells.mean(axis=1), cells.mean(axis=0)
    ms_s, ms_p = p * ((m_s - grand) ** 2).sum() / (s - 1), s * ((m_p - grand) ** 2).sum() / (p - 1)
    ms_sp = ((cells - m_s[:, None] - m_p[None, :] + grand) ** 2).sum() / ((s - 1) * (p - 1))
    terms = [(ms_sp, (s - 1) * (p - 1))]
    for ms, df in ((ms_s, s - 1), (ms_p, p - 1)):
        if ms > ms_sp:
            terms += [(ms, df), (-ms_sp, (s - 1) * (p - 1))]
    total = sum(t for t, _ in terms)
    df = total**2 / sum(t * t / d for t, d in terms)
    half = t_quantile(0.975, df) * math.sqrt(total / (s * p))
    return float(grand - half), float(grand + half)


def score_coverage(data: np.ndarray, truth: float, rng) -> dict[str, dict]:
    """Coverage and mean width of each interval over the replicates of ``data``."""
    hits = {
        name: []
        for name in (
            "hierarchical bootstrap",
            "crossed bootstrap",
            "t over seed means",
            "crossed t, Satterthwaite",
            "crossed t",
        )
    }
    widths = {name: [] for name in hits}
    for cube in data:
        intervals = {
            "hierarchical bootstrap": _pair(hierarchical_bootstrap(list(cube.reshape(cube.shape[0], -1)))),
            "crossed bootstrap": crossed_bootstrap(cube, rng),
            "t over seed means": _pair(t_interval(cube.mean(axis=(1, 2)))),
            "crossed t, Satterthwaite": satterthwaite(cube),
            "crossed t": _pair(crossed_interval(cube)),
        }
        for name, (low, high) in intervals.items():
            hits[name].append(low <= truth <= high)
            widths[name].append(high - low)
    return {name: _summary(hits[name], widths[name]) for name in hits}


def seed_level_coverage(rng, reps: int, seeds: int, distribution: str) -> dict[str, dict]:
    """Claims measured once per run: S values, truth 0 (location and scale do not matter)."""
    if distribution == "normal":
        values = rng.standard_normal((reps, seeds))
    else:  # heavy tails: Student t with 3 degrees of freedom, mean 0
        values = rng.standard_t(3, size=(reps, seeds))
    hits = {"hierarchical bootstrap": [], "t over seeds": []}
    widths = {name: [] for name in hits}
    for row in values:
        for name, (low, high) in (
            ("hierarchical bootstrap", _pair(hierarchical_bootstrap([[v] for v in row]))),
            ("t over seeds", _pair(t_interval(row))),
        ):
            hits[name].append(low <= 0.0 <= high)
            widths[name].append(high - low)
    return {name: _summary(hits[name], widths[name]) for name in hits}


def _pair(estimate) -> tuple[float, float]:
    return estimate.ci_low, estimate.ci_high


def _summary(hits, widths) -> dict:
    c, n = float(np.mean(hits)), len(hits)
    return {"coverage": c, "mc_se": math.sqrt(c * (1 - c) / n), "mean_width": float(np.mean(widths)), "reps": n}


# -- 3. report ----------------------------------------------------------------------------------------------
def run(reps: int, seed: int) -> dict:
    rows, pooled = measured_components()
    measured_seed = sorted(max(0.0, r["sd"]["seed"]) for r in rows)
    settings = {
        "0 (none)": 0.0,
        f"{pooled['seed']:.4f} (measured, mean)": pooled["seed"],
        "0.012 (largest measured: diff-dpo - lr5x)": 0.012,
        "0.02 (issue 25)": 0.02,
    }
    rng = np.random.default_rng(seed)
    score, win = [], []
    mu = 0.018  # refdpo - diff-dpo; coverage of the score intervals does not depend on it
    for label, seed_sd in settings.items():
        sd = dict(pooled, seed=seed_sd)
        total = math.sqrt(sum(v * v for v in sd.values()))
        for seeds in SEED_COUNTS:
            data = simulate(rng, reps, seeds, sd, mu)
            score.append({"seed_sd": label, "seeds": seeds, "methods": score_coverage(data, mu, rng)})
            if seed_sd in (pooled["seed"], 0.012):
                # win rates at the Table 1 headline's size: P(d > 0) = Phi(mu_w / total) = 0.65
                mu_w = 0.3853 * total
                outcomes = (data - mu + mu_w > 0).astype(np.float64)
                truth = 0.5 * (1 + math.erf(mu_w / total / math.sqrt(2)))
                win.append(
                    {"seed_sd": label, "seeds": seeds, "truth": truth, "methods": score_coverage(outcomes, truth, rng)}
                )
            print(f"seed SD {label}, {seeds} seeds done", flush=True)
    once = [
        {"distribution": dist, "seeds": seeds, "methods": seed_level_coverage(rng, reps, seeds, dist)}
        for dist in ("normal", "student t, 3 df")
        for seeds in SEED_COUNTS
    ]
    return {
        "reps": reps,
        "seed": seed,
        "nominal": 0.95,
        "prompts": PROMPTS,
        "eval_seeds": EVALS,
        "components": {"per_pair": rows, "pooled_sd": pooled, "seed_sd_measured_sorted": measured_seed},
        "score": score,
        "win_rate": win,
        "once_per_run": once,
    }


def markdown(result: dict) -> str:
    pooled = result["components"]["pooled_sd"]
    lines = [
        "# Coverage of the claims' 95% intervals (issue 25)",
        "",
        f"`python benchmarks/coverage.py` ({result['reps']} simulated data sets per row, Monte-Carlo SE in "
        f"brackets, mean interval width after it; {result.get('wall_s', 0):.0f} s on one core). Nominal 0.95; "
        "the target is at least 0.93 at 3 and 5 seeds.",
        "",
        "**Chosen:** `crossed t` (`refbench.method.inference.crossed_interval`) for score effects and win "
        "rates: the seed means' variance with t_{S-1}, the variance the shared prompts add with t_{P-1}, "
        "each scaled by its own quantile. It is the only score interval at or above 0.95 in every row; "
        "Satterthwaite's single quantile is narrower but sits at the target's edge with 3 seeds. "
        "`t over seeds` (`t_interval`) for claims measured once per run. `hierarchical bootstrap` is "
        "today's method (`analysis.seeds.compare` and `seed_level`).",
        "",
        "## Score effects (paired human differences, 42 prompts x 2 evaluation seeds per training seed)",
        "",
        _table(result["score"], "between-seed SD"),
        "",
        "## Win rates (the same data as outcomes 1[d > 0]; true win rate 0.65)",
        "",
        _table(result["win_rate"], "between-seed SD"),
        "",
        "## Claims measured once per run (one value per training seed)",
        "",
        _table(result["once_per_run"], "distribution of the seed values", key="distribution"),
        "",
        "Today's bootstrap over 3 values is their range: coverage 1 - 2 (1/2)^3 = 0.75 for normal values.",
        "",
        "## Variance components used",
        "",
        "SDs of the paired human differences, by a balanced random-effects ANOVA of each comparison's "
        "(training seed x prompt x evaluation seed) table in `results/data/` (3 seeds x 42 prompts x 2 "
        "evaluation seeds; a negative variance estimate shown as a negative SD). The simulation uses "
        "the mean over comparisons of each variance (set to 0 if negative), with the between-seed SD "
        "varied as in the tables above.",
        "",
        "| comparison | effect | seed means | " + " | ".join(COMPONENTS) + " |",
        "|---|---|---|" + "---|" * len(COMPONENTS),
    ]
    for row in result["components"]["per_pair"]:
        seeds = ", ".join(f"{v:+.4f}" for v in row["seed_means"])
        lines.append(
            f"| {row['pair']} | {row['effect']:+.4f} | {seeds} | "
            + " | ".join(f"{row['sd'][k]:.4f}" for k in COMPONENTS)
            + " |"
        )
    lines.append(
        "| **used (mean of variances)** | | | " + " | ".join(f"**{pooled[k]:.4f}**" for k in COMPONENTS) + " |"
    )
    return "\n".join(lines) + "\n"


def _table(rows: list[dict], label: str, key: str = "seed_sd") -> str:
    methods = list(rows[0]["methods"])
    out = [f"| {label} | seeds | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for row in rows:
        cells = [
            f"{m['coverage']:.3f} ({m['mc_se']:.3f}), width {m['mean_width']:.3g}" for m in row["methods"].values()
        ]
        out.append(f"| {row[key]} | {row['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "coverage.json")
    parser.add_argument("--render", action="store_true", help="only rewrite the markdown from the JSON")
    args = parser.parse_args()
    if args.render:
        args.out.with_suffix(".md").write_text(markdown(json.loads(args.out.read_text())))
        return
    start = time.perf_counter()
    result = run(args.reps, args.seed)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    result["machine"] = f"{platform.machine()} {platform.python_version()}, numpy {np.__version__}"
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
