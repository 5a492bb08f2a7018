"""The toy world in the paper's regime (issue 25): the rules, written before any run they govern.

Pure data and pure functions, no I/O. Three rules, in the order they are used:

1. **The regime** (``STEPS``, ``PAIRS``, ``TAUS``): the paper's data reuse and syncs per run,
   carried to the toy world's step budget.
   - The paper trains SD1.5 for 2,000 steps of 2,048 pairs on the 851,293 usable pairs of
     Pick-a-Pic v2: 4.81 epochs. The toy world keeps its batch of 8 pairs and its base model,
     oracle and pairs; it trains on a subset of the toy pairs small enough to reach the same
     reuse: ``PAIRS`` = 256 x 8 / 4.81 = 426 pairs.
   - ``STEPS`` = 256 is the largest budget at which the whole default reproduction (tuning, five
     seeds) fits in 120 min on two cores (about 75 s of training per run), and a multiple of
     the monitor's interval, so every run measures its divergence at its last step.
   - tau: the paper syncs 2,000 / 32 = 62.5 times a run and searches tau over {16, 32, 64}; at
     256 steps the same fractions of the run are {2, 4, 8} (256 / 4 = 64 syncs).
   - Validation prompts (``VALIDATION``, "toy-val"): 42 of the 210 toy-train prompts, a simple
     random sample (numpy seed 2025, ``toy.prompts``). Their pairs are left out of the regime's
     training subset (``data.exclude_prompts``), so they are prompts no run has trained on, like
     toy-test; unlike toy-test, their (colour, shape) combinations occur in training with other
     counts and backgrounds. They are disjoint from toy-test, so nothing is tuned on the prompts
     that judge the claims. They are a fair proxy for choosing how far to train: the oracle's
     preferences are the same on every prompt, and what tuning must detect (the model drifting
     from what the pairs teach, or forgetting what the base model knew) shows on any prompt the
     run has not fitted. One evaluation seed per prompt on validation.

2. **Diffusion-DPO's learning rate and length** (``CURVE_*``, ``choose_curve_point``), tuned for
   Diffusion-DPO alone as the official recipe was: every learning rate of ``CURVE_LRS`` under
   the three seeds ``CURVE_SEEDS``, each run saving its weights after 64, 128, 192 and 256
   steps (a run cut at step s is the first s steps of the longer one: constant learning rate
   after warm-up, data and noise functions of (seed, step)). The point (lr*, S*) with the best
   mean validation ``human`` score over the three seeds is the regime's learning rate and step
   count for every method (the paper trains its method at Diffusion-DPO's learning rate).
   Over-optimisation is *shown* when moving further than (lr*, S*) along either axis (the
   largest learning rate at S*, or the longest run at lr*) scores lower than (lr*, S*), by a
   one-sided t test over the three seeds' paired differences at 5%. If it is not shown, the
   claims of ``NEEDS_OVER_OPTIMISATION`` are reported "untestable in this world" (no further
   tuning).

3. **Baselines tuned alike** (``TUNING_*``, ``choose_tuned``): every method's main knob gets a
   grid of three values on the validation prompts under one training seed (``TUNING_SEED``), at
   (lr*, S*); the value with the best mean validation ``human`` score is kept (ties: the
   published default). refdpo's two knobs are searched one after the other: tau over ``TAUS``
   at the middle delta, then delta at the chosen tau (5 runs against 3 for every other
   method, and Diffusion-DPO's learning rate and length had 16 points x 3 seeds).
"""

from __future__ import annotations

__all__ = [
    "PAPER_EPOCHS",
    "PAPER_SYNCS",
    "STEPS",
    "BATCH",
    "PAIRS",
    "TAUS",
    "VALIDATION",
    "VALIDATION_EVAL_SEEDS",
    "CURVE_LRS",
    "CURVE_SNAPSHOTS",
    "CURVE_SEEDS",
    "TUNING_SEED",
    "DELTA_FRACTIONS",
    "NEEDS_OVER_OPTIMISATION",
    "tuning_grids",
    "choose_curve_point",
    "choose_tuned",
    "EXCLUDED_PROMPTS",
    "MAIN_SEEDS",
    "SWEEP_ONLY_SEEDS",
    "TEST_EVAL_SEEDS",
    "paper_specs",
    "regime_overrides",
    "SWEEP_ONLY",
    "over_optimisation",
]

# The paper's (and the official Diffusion-DPO recipe's) numbers for SD1.5.
PAPER_STEPS, PAPER_BATCH, PAPER_USABLE_PAIRS = 2000, 2048, 851_293
PAPER_TAUS, PAPER_TAU = (16, 32, 64), 32
PAPER_EPOCHS = PAPER_STEPS * PAPER_BATCH / PAPER_USABLE_PAIRS  # 4.81
PAPER_SYNCS = PAPER_STEPS / PAPER_TAU  # 62.5

STEPS = 256
BATCH = 8
PAIRS = round(STEPS * BATCH / PAPER_EPOCHS)  # 426
TAUS = tuple(round(tau * STEPS / PAPER_STEPS) for tau in PAPER_TAUS)  # (2, 4, 8)
VALIDATION = "toy-val"
EXCLUDED_PROMPTS = VALIDATION  # data.exclude_prompts of every regime run
VALIDATION_EVAL_SEEDS = 1

# Rule 2: Diffusion-DPO's curve. The toy preset's 1e-5 moved the model measurably in 300 steps of
# fresh pairs; 2.5e-4 collapsed it (human 0.428 against the base model's 0.526). The grid spans
# 1e-5 to 1e-4, below that edge, at about 2x apart.
CURVE_LRS = (1e-5, 2e-5, 5e-5, 1e-4)
CURVE_SNAPSHOTS = (64, 128, 192)  # and STEPS, the run's end
CURVE_SEEDS = (100, 101, 102)  # apart from the test runs' seeds 0..4
CURVE_ALPHA = 0.05

# Claims about what exploring too far does: they test over-optimisation, so they are testable only
# in a world that shows it (rule 2). Keys as analysis.claims names them: (where, start of the claim).
NEEDS_OVER_OPTIMISATION = (
    ("Fig. 1(c)", "Controlled divergence scores best"),
    ("Table 3", "A 5x learning rate degrades Diffusion-DPO"),
    ("Table 3", "beta 1000 does not reach the method's gain"),
    ("Fig. 4", "Without regularisation, a shorter tau scores lower"),
)

# Rule 3: the tuning grids. The first value of each is the published default (the tie-break).
TUNING_SEED = CURVE_SEEDS[0]
DELTA_FRACTIONS = (0.5, 0.25, 1.0)  # x Diffusion-DPO's final D(policy, init) at (lr*, S*), mean over seeds


def tuning_grids(lr: float, dpo_divergence: float) -> dict[str, list[tuple[str, dict]]]:
    """Method -> its grid as (label, config overrides), the published default first. ``lr`` is
    lr*, ``dpo_divergence`` Diffusion-DPO's mean final D(policy, init) at (lr*, S*).

    - beta, x{1, 1/2, 2} around the published value: Diffusion-DPO 5000 (also the refdpo family's),
      Diffusion-KTO 1000, MaPO 0.1; DSPO over its own README's search grid {0.001, 0.01, 0.05};
    - SFT has no beta: its learning rate, lr* x {1, 1/3, 3};
    - refdpo: tau over TAUS (4 first) at delta = 0.5 D, then delta = {0.5, 0.25, 1} x D at that tau.
      The paper's delta (0.005 on SD1.5) is on its model's scale; the toy's must be on the toy's,
      and a reference that stops within Diffusion-DPO's own distance from the initial model is
      the paper's picture (Fig. 1(b)).
    """

    def betas(values):
        return [(f"beta{value:g}", {"method": {"beta": value}}) for value in values]

    return {
        "diff-dpo": betas((5000.0, 2500.0, 10000.0)),
        "diff-kto": betas((1000.0, 500.0, 2000.0)),
        "mapo": betas((0.1, 0.05, 0.2)),
        "dspo": betas((0.001, 0.01, 0.05)),
        "sft": [(f"lr{value:g}", {"training": {"learning_rate": value}}) for value in (lr, lr / 3, lr * 3)],
        "refdpo-tau": [
            (f"tau{tau}", {"method": {"tau": tau, "delta": DELTA_FRACTIONS[0] * dpo_divergence}})
            for tau in (TAUS[1], TAUS[0], TAUS[2])
        ],
        "refdpo-delta": [
            (f"delta{fraction:g}D", {"method": {"delta": fraction * dpo_divergence}}) for fraction in DELTA_FRACTIONS
        ],
    }


def choose_curve_point(scores: dict[tuple[float, int], list[float]]) -> tuple[float, int]:
    """(lr*, S*): the grid point with the best mean validation score over seeds. ``scores`` maps
    (lr, steps) -> the per-seed mean validation human scores, in seed order. Ties go to the
    smaller learning rate, then the shorter run (the cheaper, less divergent choice)."""
    if not scores:
        raise ValueError("no curve points")
    return max(sorted(scores), key=lambda point: (sum(scores[point]) / len(scores[point]), -point[0], -point[1]))


def choose_tuned(scores: list[float]) -> int:
    """Index of the chosen grid value: the best validation score; ties go to the earlier value
    (the grids list the published default first)."""
    if not scores:
        raise ValueError("no tuning scores")
    return max(range(len(scores)), key=lambda index: (scores[index], -index))


def lower_one_sided_p(differences: list[float]) -> float:
    """One-sided p-value that the mean of ``differences`` (one per seed) is above 0 by chance, i.e.
    of "the further point scores lower": P(T >= mean / se) with n - 1 degrees of freedom."""
    import math

    from ..method.inference import t_cdf

    n = len(differences)
    if n < 2:
        raise ValueError("a t test needs at least two seeds")
    mean = sum(differences) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    if sd == 0:
        return 0.0 if mean > 0 else 1.0
    return 1.0 - t_cdf(mean / (sd / math.sqrt(n)), n - 1)


def over_optimisation(scores: dict[tuple[float, int], list[float]], chosen: tuple[float, int]) -> dict:
    """Rule 2's test: does moving further than ``chosen`` = (lr*, S*) along either axis (the largest
    learning rate at S*, the longest run at lr*) score lower? Returns, per axis, the further point,
    the mean paired difference chosen - further and its one-sided p; ``shown`` when either axis has
    p < CURVE_ALPHA."""
    lr, steps = chosen
    further = {
        "learning rate": (max(point[0] for point in scores), steps),
        "length": (lr, max(point[1] for point in scores if point[0] == lr)),
    }
    out: dict = {"shown": False}
    for axis, point in further.items():
        if point == chosen:
            out[axis] = {"point": point, "difference": None, "p": None}
            continue
        differences = [a - b for a, b in zip(scores[chosen], scores[point])]
        p = lower_one_sided_p(differences)
        out[axis] = {"point": point, "difference": sum(differences) / len(differences), "p": p}
        out["shown"] = out["shown"] or p < CURVE_ALPHA
    return out


# What `refbench calibrate` decided (results/regime/decision.json, checked by a test): None until then.
CALIBRATION: dict | None = {
    "learning_rate": 5e-05,
    "steps": 192,
    "dpo_divergence": 0.00613104272633791,
    "over_optimisation_shown": False,
}

# Rule 4: the budget of the main runs, written before any of them. Five training seeds for every run of
# the plan, except the six runs that only Fig. 4's tau sweep uses (three seeds: the sweep's claims
# lose power, which their detectable effect shows, and no verdict moves towards either side), and
# one evaluation seed per toy-test prompt (42 images a run) for every run alike. The early regime
# measured the between-seed spread of a comparison (SD 0.008-0.02 in human) well above the sample
# noise of a 42-prompt mean (0.05 / sqrt(42) = 0.008), so a training seed buys more than a second
# evaluation seed, at about the same cost (72 s of training against 14 s of sampling per run).
MAIN_SEEDS = 5
SWEEP_ONLY_SEEDS = 3
TEST_EVAL_SEEDS = 1


def regime_overrides(
    learning_rate: float,
    *,
    steps: int = STEPS,
    snapshots: tuple[int, ...] = (),
    seed: int = 0,
    extra: dict | None = None,
) -> dict:
    """Config overrides of a run in the regime: the pair subset without the validation prompts."""
    overrides = {
        "data": {"max_pairs": PAIRS, "exclude_prompts": EXCLUDED_PROMPTS},
        "training": {
            "max_steps": steps,
            "learning_rate": learning_rate,
            "seed": seed,
            **({"snapshot_steps": list(snapshots)} if snapshots else {}),
        },
    }
    for section, values in (extra or {}).items():
        overrides.setdefault(section, {}).update(values)
    return overrides


def paper_specs(lr: float, steps: int, tuned: dict[str, dict]):
    """The plan's runs (names as the early plan's, Fig. 4 over ``TAUS`` by name) in the regime, with
    the tuned values: every Diffusion-DPO-based run at Diffusion-DPO's tuned beta (the paper trains
    its method at Diffusion-DPO's settings), every run that updates its reference at refdpo's tuned
    tau and delta; the baselines at theirs. ``tuned`` maps method -> config overrides. Table 3 keeps
    its literal beta 1000 and 5 x lr*."""
    from .sweep import RunSpec

    beta = tuned["diff-dpo"]["method"]["beta"]
    tau, delta = tuned["refdpo"]["method"]["tau"], tuned["refdpo"]["method"]["delta"]
    family, ours = {"beta": beta}, {"beta": beta, "tau": tau, "delta": delta}

    def spec(name: str, preset: str, **sections) -> RunSpec:
        return RunSpec(name, preset, regime_overrides(lr, steps=steps, extra=sections))

    return [
        spec("refdpo", "refdpo", method=ours),
        spec("diff-dpo", "diff-dpo", method=family),
        # A baseline missing from ``tuned`` (a tuning restricted to some methods) keeps its preset's values.
        *[spec(name, name, **tuned.get(name, {})) for name in ("sft", "dspo", "diff-kto", "mapo")],
        spec("diff-dpo-lr5x", "diff-dpo", method=family, training={"learning_rate": 5 * lr}),
        spec("diff-dpo-beta1000", "diff-dpo", method={"beta": 1000.0}),
        spec("ref-reinit", "ref-reinit", method=ours),
        spec("timestep-only", "timestep-only", method=family),
        spec("ref-explore", "ref-explore", method=ours),
        spec("refdpo-gamma0.8-constant", "refdpo", method={**ours, "gamma": 0.8, "reward_scale": "constant"}),
        spec("refdpo-gamma0.8", "refdpo", method={**ours, "gamma": 0.8}),
        spec("refdpo-constant", "refdpo", method={**ours, "reward_scale": "constant"}),
        spec("ref-noreg", "ref-noreg", method={"beta": beta, "tau": tau}),
        *[spec(f"refdpo-tau{t}", "refdpo", method={**ours, "tau": t}) for t in TAUS],
        *[spec(f"refdpo-noreg-tau{t}", "refdpo", method={"beta": beta, "tau": t, "on_exceed": "none"}) for t in TAUS],
    ]


def untestable_claims() -> tuple:
    """The claims the paper regime's world cannot test: those of ``NEEDS_OVER_OPTIMISATION`` unless
    Diffusion-DPO's curve showed over-optimisation (rule 2)."""
    if CALIBRATION is None:
        raise ValueError("the regime is not calibrated yet: run `refbench calibrate` and commit its decision")
    return () if CALIBRATION["over_optimisation_shown"] else NEEDS_OVER_OPTIMISATION


SWEEP_ONLY = tuple([f"refdpo-tau{t}" for t in TAUS] + [f"refdpo-noreg-tau{t}" for t in TAUS])
