"""A small but complete synthetic store for the analysis tests and notebooks (not a test file).

``build_synthetic_store(path)`` writes every table the analyses read, for every run of
``refbench.experiments.reproduce_plan.PLAN`` plus ``base``, with numbers chosen so that the tables'
bold cells, the win-rate cells, Fig. 5's percentages and each claim's verdict are known by
construction (the tests assert them; the constants below are the ground truth).

Scores: each run has 2 toy-test prompts x 2 seeds = 4 samples; sample i of a run scores
``mean_score(run, metric) + OFFSETS[i]`` and the offsets sum to zero, so the mean score is exactly
(to float rounding) the designed mean:

    human     = HUMAN[run]
    colour    = HUMAN[run] - 0.10  (+0.20 for diff-dpo-beta1000)
    count     = HUMAN[run] - 0.20  (+0.20 for timestep-only)
    shape     = HUMAN[run] - 0.05  (+0.20 for diff-dpo)
    aesthetic = HUMAN[run] - 0.30
"""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

from refbench.config import load_config
from refbench.evaluation.generate import prompt_texts, sample_id
from refbench.experiments import reproduce_plan as plan
from refbench.store import Store

METRICS = ["human", "colour", "count", "shape", "aesthetic"]
PROMPT_SET = "toy-test"
NUM_PROMPTS, SEEDS = 2, (0, 1)
OFFSETS = [-0.03, -0.01, 0.01, 0.03]  # one per sample, sum 0
# 40 steps, a train_metrics row every 4 steps, divergences every 8. Kept small: Store.upsert sends
# rows one by one (DuckDB executemany, a few ms a row on a busy machine).
STEPS, LOG_EVERY, MONITOR_EVERY = 40, 4, 8
DELTA = 0.002  # divergence at which regularised runs freeze / reinit

# Mean human score. refdpo is the best of all; timestep-only is 0.005 above diff-dpo, inside the
# equivalence margin of that no-effect claim.
HUMAN = {
    "refdpo": 0.700,
    "diff-dpo": 0.600,
    "sft": 0.550,
    "dspo": 0.580,
    "diff-kto": 0.570,
    "mapo": 0.620,
    "diff-dpo-lr5x": 0.500,
    "diff-dpo-beta1000": 0.610,
    "ref-reinit": 0.640,
    "timestep-only": 0.605,
    "ref-explore": 0.650,
    "refdpo-gamma0.8-constant": 0.630,
    "refdpo-gamma0.8": 0.660,
    "refdpo-constant": 0.670,
    "ref-noreg": 0.520,
    "refdpo-tau4": 0.680,
    "refdpo-tau16": 0.690,
    "refdpo-noreg-tau4": 0.510,
    "refdpo-noreg": 0.530,
    "refdpo-noreg-tau16": 0.560,
    "base": 0.450,
}
METRIC_OFFSET = {"human": 0.0, "colour": -0.10, "count": -0.20, "shape": -0.05, "aesthetic": -0.30}
BUMP = {"colour": "diff-dpo-beta1000", "count": "timestep-only", "shape": "diff-dpo"}  # +0.20 on that metric


def mean_score(run: str, metric: str) -> float:
    return HUMAN[run] + METRIC_OFFSET[metric] + (0.20 if BUMP.get(metric) == run else 0.0)


# Final D(policy, init) after STEPS steps; refdpo sits in the middle of the ranking (Fig. 1(c) holds).
FINAL_DIV_POLICY = {
    "refdpo": 0.0040,
    "diff-dpo": 0.0005,
    "sft": 0.0010,
    "dspo": 0.0008,
    "diff-kto": 0.0007,
    "mapo": 0.0009,
    "diff-dpo-lr5x": 0.0030,
    "diff-dpo-beta1000": 0.0015,
    "ref-reinit": 0.0025,
    "timestep-only": 0.0006,
    "ref-explore": 0.0060,
    "refdpo-gamma0.8-constant": 0.0035,
    "refdpo-gamma0.8": 0.0038,
    "refdpo-constant": 0.0042,
    "ref-noreg": 0.0200,
    "refdpo-tau4": 0.0041,
    "refdpo-tau16": 0.0039,
    "refdpo-noreg-tau4": 0.0250,
    "refdpo-noreg": 0.0180,
    "refdpo-noreg-tau16": 0.0120,
}
# Reward margin grows linearly: margin(step) = MARGIN_SLOPE * step (ref-noreg's is steeper than diff-dpo's).
MARGIN_SLOPE = {"ref-noreg": 4e-5, "diff-dpo": 1e-5}
DEFAULT_MARGIN_SLOPE = 2e-5

# Win rates of refdpo against each Table 1 baseline: rate = BASE_RATE + METRIC_DELTA (the deltas sum
# to 0, so the row average is BASE_RATE), interval rate -/+ 0.125 clipped to [0, 1]. mapo's average is
# below 50% on purpose (the "beats SFT, DSPO, KTO, MaPO" claim fails).
BASE_RATE = {"sft": 0.65, "diff-dpo": 0.65, "dspo": 0.60, "diff-kto": 0.55, "mapo": 0.45, "base": 0.80}
METRIC_DELTA = {"human": 0.10, "colour": 0.05, "count": 0.0, "shape": -0.05, "aesthetic": -0.10}
CI_HALF_WIDTH = 0.125

# Timestep analysis (10 intervals, bin 0 = the noisiest [900, 1000)). Divergence per interval
# relative to ref-explore's (Fig. 5): refdpo-constant 90% everywhere; refdpo 25% in bin 0, 125% elsewhere.
BINS = 10
TIMESTEP_DIVERGENCE = {
    "ref-explore": [0.004] * BINS,
    "refdpo-constant": [0.0036] * BINS,
    "refdpo": [0.001] + [0.005] * (BINS - 1),
    "diff-dpo": [0.0004] * BINS,
}

# Claim verdicts by construction, in check_claims' order (see analysis/claims.py). One training
# seed, and every paired difference is the same for all 4 samples (the offsets cancel), so every
# interval is a single point [d, d]: the verdict is the sign of d.
EXPECTED_VERDICTS = [
    ("Table 1", "beats Diffusion-DPO", "holds"),  # human 0.700 vs 0.600 on all 4 pairs: 100% [100, 100]
    ("Table 1", "SFT", "holds"),  # refdpo beats sft, dspo, diff-kto, mapo on every metric: 100% each
    ("Fig. 1(b)", "stays close", "holds"),  # ref-noreg D(ref) 0.020 - diff-dpo's D(policy) 0.0005 > 0
    ("Fig. 1(b)", "keeps growing", "holds"),  # ref-noreg D(ref) 0.020 at 40 - 0.008 at step 16 (last measured <= 20)
    ("Fig. 1(b)", "margin", "holds"),  # slope 4e-5 vs 1e-5
    ("Fig. 1(b)", "delta boundary", "holds"),  # refdpo froze (step 24); 0.020 - 0.0024 > 0
    ("Fig. 1(c)", "Controlled", "holds"),  # thirds by divergence: middle 0.63875 - high 0.57333, - low 0.5875
    ("Fig. 2", "noisy start", "holds"),  # ref-explore bin 0: smallest |r_t|, accuracy 0.5 below the rest
    ("Table 3", "5x learning rate", "holds"),  # 0.600 - 0.500
    ("Table 3", "beta 1000", "holds"),  # 0.700 - 0.610
    ("Table 3", "Re-initialising", "holds"),  # 0.640 - 0.600 and 0.700 - 0.640
    # diff-dpo 0.600 - timestep-only 0.605 = -0.005 on every pair (SE 0): inside the plan's margin 0.010
    ("Table 4", "alone does not help", "holds"),
    ("Table 4", "Exploration alone", "holds"),  # 0.650 - 0.600
    ("Table 4", "adds to exploration", "holds"),  # 0.700 - 0.650
    ("Table 4", "lambda(t)", "holds"),  # 0.660 - 0.630 and 0.700 - 0.670
    ("Fig. 4", "shorter tau", "holds"),  # noreg-tau16 0.560 - noreg-tau4 0.510
    ("Fig. 4", "every tau", "holds"),  # 0.680, 0.700, 0.690 - 0.600
    ("Fig. 5", "early timesteps", "holds"),  # 90% - 25% = 65 points
]


# Image-passes per step by construction (batch 8 pairs): policy forward and backward on 16 images,
# the reference forward on 16 (none for mapo); sft trains on the 8 winners only; no monitor rows.
def passes_per_step(method: str) -> tuple[int, int, int]:
    """(policy forward = backward, reference forward) per step."""
    if method == "sft":
        return 8, 0, 0
    return 16, (0 if method == "mapo" else 16), 0


def run_config(spec) -> dict:
    return load_config(method=spec.method, preset=spec.preset, overrides=spec.overrides, name=spec.name).to_dict()


def _train_rows(name: str, config: dict) -> tuple[list[dict], list[dict]]:
    method = config["method"]
    syncing = method["reference"] == "sync"
    tau, on_exceed = method["tau"], method["on_exceed"]
    final = FINAL_DIV_POLICY[name]
    slope = MARGIN_SLOPE.get(name, DEFAULT_MARGIN_SLOPE)
    metrics, events = [], []
    frozen = False
    ref_div = 0.0
    for step in range(1, STEPS + 1):
        policy_div = final * step / STEPS
        if syncing and not frozen and step % tau == 0:  # the reference takes the policy's weights
            ref_div = policy_div
            events.append({"run": name, "step": step, "kind": "sync", "divergence": ref_div})
            if on_exceed != "none" and ref_div > DELTA:
                if on_exceed == "freeze":
                    frozen = True
                    events.append({"run": name, "step": step, "kind": "freeze", "divergence": ref_div})
                else:  # reinit: back to the initial model
                    ref_div = 0.0
                    events.append({"run": name, "step": step, "kind": "reinit", "divergence": 0.0})
        if step % LOG_EVERY:
            continue
        measured = step % MONITOR_EVERY == 0
        row = {
            "run": name,
            "step": step,
            "loss": 0.7 - 0.002 * step,
            "accuracy": 0.5 + 0.005 * step,
            "margin": slope * step,
            "model_err_w": 0.1,
            "model_err_l": 0.11,
            "ref_err_w": 0.1,
            "ref_err_l": 0.11,
            "div_policy": policy_div if measured else None,
            "div_ref": ref_div if measured else None,
            "lr": config["training"]["learning_rate"],
            "seconds": 0.05 * step,
        }
        if measured and not syncing:
            row["div_ref"] = 0.0  # the trainer logs 0 for a reference that never moves
        metrics.append(row)
    return metrics, events


def build_synthetic_store(path: str | Path) -> Store:
    """Write the synthetic store at ``path`` (a new DuckDB file) and return it."""
    from datetime import datetime

    store = Store(path)
    stamp = datetime(2025, 1, 1, tzinfo=UTC)
    runs, metrics, events = [], [], []
    for index, spec in enumerate(plan.PLAN):
        config = run_config(spec)
        runs.append(
            {
                "name": spec.name,
                "id": f"synthetic{index:04d}",
                "method": spec.method,
                "preset": spec.preset,
                "config": config,
                "git_revision": "synthetic",
                "versions": {"refbench": "synthetic"},
                "seed": config["training"].get("seed", 0),
                "status": "finished",
                "run_dir": f"runs/{spec.name}",
                "created_at": stamp,
                "updated_at": stamp,
                "message": None,
            }
        )
        run_metrics, run_events = _train_rows(spec.name, config)
        metrics += run_metrics
        events += run_events
    store.upsert("runs", runs)
    costs = []
    for spec in plan.PLAN:
        policy, reference, _ = passes_per_step(spec.method)
        steps = run_config(spec)["training"]["max_steps"]  # per step = count / the run's max_steps
        kinds = {
            "policy": (policy * steps, policy * steps),
            "reference": (reference * steps, 0),
            "initial": (0, 0),
            "monitor": (0, 0),
        }
        costs += [
            {"run": spec.name, "kind": k, "forward_images": f, "backward_images": b, "seconds": None}
            for k, (f, b) in kinds.items()
        ]
        costs.append(
            {
                "run": spec.name,
                "kind": "total",
                "forward_images": sum(f for f, _ in kinds.values()),
                "backward_images": sum(b for _, b in kinds.values()),
                "seconds": 2.0 * STEPS,
            }
        )
    store.upsert("run_costs", costs)
    store.upsert("train_metrics", metrics)
    store.upsert("ref_events", events)

    import hashlib

    import numpy as np
    from PIL import Image

    from refbench.evaluation.generate import prompt_set_fingerprint

    fingerprint = prompt_set_fingerprint(prompt_texts(PROMPT_SET))
    oracle = hashlib.sha256(b"synthetic oracle").hexdigest()
    images = Path(path).parent / "synthetic-samples"
    prompts = prompt_texts(PROMPT_SET)[:NUM_PROMPTS]
    samples, scores = [], []
    for run in [s.name for s in plan.PLAN] + ["base"]:
        i = 0
        for prompt in prompts:
            for seed in SEEDS:
                sid = sample_id(run, PROMPT_SET, prompt, seed)
                image = images / run / PROMPT_SET / f"{i:04d}.png"  # a real 16 px PNG, its grey level the score
                image.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((16, 16, 3), int(255 * mean_score(run, "human")), dtype=np.uint8)).save(image)
                samples.append(
                    {
                        "sample_id": sid,
                        "run": run,
                        "prompt_set": PROMPT_SET,
                        "prompt": prompt,
                        "seed": seed,
                        "image_path": str(image),
                        "guidance_scale": 1.0,
                        "num_steps": 20,
                        "created_at": stamp,
                        "sampler": "toy DDIMScheduler",
                        "height": 16,
                        "width": 16,
                        "prompt_set_sha256": fingerprint,
                    }
                )
                scores += [
                    {
                        "sample_id": sid,
                        "metric": m,
                        "value": mean_score(run, m) + OFFSETS[i],
                        "source": "builtin:synthetic",
                        "weights_sha256": oracle,
                    }
                    for m in METRICS
                ]
                i += 1
    store.upsert("samples", samples)
    store.upsert("scores", scores)
    # a reward model's checkpoint record, as `score` writes for pickscore=SOURCE (the toy oracles have none)
    store.upsert(
        "metric_sources",
        [
            {
                "metric": "pickscore",
                "source": "/models/PickScore_v1",
                "weights_sha256": "0" * 64,
                "size_bytes": 1,
                "recorded_at": stamp,
            }
        ],
    )
    # a `make-pairs` set: its protocol, the scores of its candidates, and its one pair
    out = "/pairs/onpolicy"
    store.upsert(
        "pair_sets",
        [
            {
                "out": out,
                "model": "base",
                "model_kind": "toy",
                "prompt_set": "toy-train",
                "reward": "human",
                "per_prompt": 2,
                "steps": 20,
                "status": "complete",
                "num_pairs": 1,
                "num_ties": 0,
                "created_at": stamp,
            }
        ],
    )
    store.upsert(
        "pair_candidates",
        [{"out": out, "prompt": "a red circle", "seed": seed, "score": 0.5 + 0.1 * seed} for seed in (0, 1)],
    )
    store.upsert(
        "made_pairs",
        [
            {
                "out": out,
                "prompt": "a red circle",
                "seed_0": 0,
                "seed_1": 1,
                "score_0": 0.5,
                "score_1": 0.6,
                "label_0": 0.0,
            }
        ],
    )

    n = NUM_PROMPTS * len(SEEDS)
    winrates = []
    for baseline, base_rate in BASE_RATE.items():
        for metric in METRICS:
            rate = base_rate + METRIC_DELTA[metric]
            winrates.append(
                {
                    "run": plan.TABLE1_RUN,
                    "baseline": baseline,
                    "metric": metric,
                    "prompt_set": PROMPT_SET,
                    "n": n,
                    "rate": rate,
                    "ci_low": max(0.0, rate - CI_HALF_WIDTH),
                    "ci_high": min(1.0, rate + CI_HALF_WIDTH),
                    "mean_run": mean_score(plan.TABLE1_RUN, metric),
                    "mean_baseline": mean_score(baseline, metric),
                    "created_at": stamp,
                }
            )
    store.upsert("winrates", winrates)

    stats = []
    for run in plan.TIMESTEP_RUNS:
        for b in range(BINS):
            noisy = b == 0
            stats.append(
                {
                    "run": run,
                    "analysis": "reference",
                    "bin": b,
                    "t_low": 1000 - 100 * (b + 1),
                    "t_high": 1000 - 100 * b,
                    "n": 32,
                    "loss": 0.02 + 0.01 * b,
                    "reward_scale": 1e-4 if noisy else 1e-3 * (1 + 0.1 * b),
                    "accuracy": 0.5 if noisy else 0.6 + 0.01 * b,
                    "lambda_t": 0.2 + 0.08 * b,
                    "divergence": TIMESTEP_DIVERGENCE[run][b],
                }
            )
    store.upsert("timestep_stats", stats)
    return store
