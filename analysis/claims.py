"""The paper's claims, checked one by one against the store, over training seeds.

Every check measures one *effect*, signed so that the paper's claim is a positive effect, with
a 95% interval that includes seed-to-seed variation (``refbench.method.inference``, chosen by the
coverage study ``benchmarks/coverage.md``), and gives one of three verdicts:

- ``holds``: the effect is above no effect (0, or 50% for a win rate);
- ``contradicted``: it is below;
- ``inconclusive``: neither;
- ``not measured``: a run it needs is missing.

Score comparisons use the hidden ``human`` oracle (the toy's PickScore) on samples paired by
(prompt, evaluation seed) inside each training seed; every seed is evaluated on the same prompts,
so the interval crosses seeds with prompts (``seeds.crossed``: the seed means' variance with
t_{S-1}, the shared prompts' with t_{P-1}). Effects measured once per training run (a divergence,
a reward margin, a timestep analysis) have the training seeds as their only level: Student's t
over the seeds (``seeds.seed_t``), never the range of three values.

Multiplicity: every part of every measured claim is one test (a claim made of several
comparisons, ``every tau beats Diffusion-DPO``, has one per comparison), and Holm's step-down
adjustment runs over that family. ``verdict`` is the adjusted one: a part holds (is contradicted)
when its adjusted p-value is at most 0.05 and its effect is above (below) no effect;
``verdict_unadjusted`` reads the 95% intervals alone. A claim holds when every part holds, is
contradicted when any part is, and is inconclusive otherwise. Each claim also shows the smallest
effect its shown part could detect (``mde``: 80% power, two-sided 5%), so that "inconclusive"
reads as "no power" or "no effect". With one training seed (or one value) a part has no p-value
and keeps its interval's verdict.

A claim of no effect ("timestep-aware training alone does not help") is an equivalence test:
two one-sided tests that |effect| is below the margin written in the plan before the runs it
governs (``reproduce_plan.EQUIVALENCE_MARGINS``); its p-value (the larger one-sided one) joins the
Holm family, it holds when equivalence is shown and is contradicted when its 95% interval lies
wholly outside the margin.

The rules (which runs, which effect, which sign) were fixed before the multi-seed numbers were
seen; the paper's wording of each claim is unchanged from the one-seed version.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import pandas as pd

from refbench.experiments import reproduce_plan as plan
from refbench.method.hierarchical import verdict
from refbench.method.inference import Interval, holm, minimum_detectable_effect, tost

from . import reads, seeds
from .costs import cost_text
from .figures import relative_divergence

__all__ = ["Claim", "check_claims", "claims_table", "verdict_counts", "VERDICTS", "UNTESTABLE", "store_regime"]

PRIMARY = "human"
ALPHA = 0.05
UNTESTABLE = "untestable in this world"
VERDICTS = ("holds", "inconclusive", "contradicted", UNTESTABLE, "not measured")


@dataclass(frozen=True)
class Claim:
    where: str
    paper: str
    measured: str  # what the effect is, with its value and interval
    effect: float | None
    ci_low: float | None
    ci_high: float | None
    seeds: int
    samples: int  # paired samples per seed (1: measured once per training run)
    verdict: str  # after Holm's adjustment over every part of every claim
    cost: str = ""
    verdict_unadjusted: str = ""  # from the 95% intervals alone
    p_value: float | None = None  # the shown part's, two-sided against no effect
    p_adjusted: float | None = None  # Holm
    mde: float | None = None  # smallest effect the shown part detects (80% power, two-sided 5%)
    interval: str = ""  # how the interval was made
    scale: float = 1.0  # ``measured`` shows effects (and the report the mde) times this


def store_regime(db) -> str:
    """The plan regime of the store's runs ('paper' or 'early', ``reproduce_plan.detect_regime``)."""
    return plan.detect_regime(reads.open_store(db).query("SELECT name FROM runs")["name"])


class _Missing(Exception):
    pass


class _Result(NamedTuple):
    measured: str
    shown: Interval  # the estimate shown in the table (the weakest part)
    verdict: str  # from the parts' 95% intervals alone (unadjusted)
    cost: str
    parts: list  # (Interval, null) of every comparison the claim is made of
    capped: bool  # at most inconclusive, whatever the tests say
    scale: float = 1.0  # the factor the measured text shows the effect with (x1e3: 1000)


class _Equivalent(NamedTuple):
    """A part's null for a claim of no effect: |effect| < margin, by two one-sided tests."""

    margin: float


def _part_p(estimate: Interval, null) -> float:
    """The part's p-value in the Holm family: TOST's for a no-effect part, else two-sided against 0."""
    if isinstance(null, _Equivalent):
        return tost(estimate.effect, estimate.se, estimate.df, null.margin).p_value
    return estimate.p_value


def _part_verdict(estimate: Interval, null, p: float | None = None, alpha: float = ALPHA) -> str:
    """From the intervals alone (``p`` None), or from the (adjusted) p-value. A no-effect part holds when
    equivalence is shown and is contradicted when the 95% interval lies wholly outside the margin."""
    if isinstance(null, _Equivalent):
        outside = estimate.ci_low >= null.margin or estimate.ci_high <= -null.margin
        shown = (
            tost(estimate.effect, estimate.se, estimate.df, null.margin, alpha=alpha).equivalent
            if p is None
            else p <= alpha
        )
        return "holds" if shown else "contradicted" if outside else "inconclusive"
    if p is None:
        return verdict(estimate.ci_low, estimate.ci_high, null=null)
    return "inconclusive" if p > alpha else "holds" if estimate.effect > null else "contradicted"


def _result(
    measured: str, shown: Interval, parts: list, cost: str = "", capped: bool = False, scale: float = 1.0
) -> _Result:
    plain = _combine([_part_verdict(e, null) for e, null in parts])
    return _Result(measured, shown, _cap(plain) if capped else plain, cost, parts, capped, scale)


def _cap(result: str) -> str:
    return "inconclusive" if result == "holds" else result


def _combine(verdicts: list[str]) -> str:
    if all(v == "holds" for v in verdicts):
        return "holds"
    return "contradicted" if "contradicted" in verdicts else "inconclusive"


class _Checks:
    """Each check returns a ``_Result`` (its verdict from the intervals; ``check_claims`` adds Holm's)."""

    def __init__(self, db, prompt_set: str):
        self.db, self.prompt_set = db, prompt_set
        self.regime = store_regime(db)  # which plan's names (Fig. 4's tau sweep differs)

    # -- measurements ----------------------------------------------------------------------------
    def diff(self, a: str, b: str) -> Interval:
        try:
            return seeds.crossed(self.db, a, b, metric=PRIMARY, prompt_set=self.prompt_set)
        except LookupError as missing:
            raise _Missing(str(missing)) from None

    def win(self, a: str, b: str, metrics: list[str] | None = None) -> Interval:
        try:
            return seeds.crossed(
                self.db, a, b, kind="win", metric=PRIMARY, metrics_for_win=metrics, prompt_set=self.prompt_set
            )
        except LookupError as missing:
            raise _Missing(str(missing)) from None

    def per_seed(self, family: str, value_of) -> list[float]:
        try:
            return seeds.per_seed(self.db, family, value_of)
        except LookupError as missing:
            raise _Missing(str(missing)) from None

    def series(self, run: str, column: str) -> pd.DataFrame:
        curves = reads.train_curves(self.db, [run]).dropna(subset=[column])
        if curves.empty:
            raise _Missing(run)
        return curves

    def final(self, run: str, column: str) -> float:
        return float(self.series(run, column)[column].iloc[-1])

    def paired_seed_values(self, a: str, b: str, value_of) -> list[float]:
        """value_of(run_a, run_b) per shared training seed."""
        try:
            pairs = seeds._pairs(self.db, a, b)
        except LookupError as missing:
            raise _Missing(str(missing)) from None
        return [value_of(run_a, run_b) for run_a, run_b in pairs]

    def cost(self, *families: str) -> str:
        return cost_text(self.db, list(families))

    # -- helpers for score claims ----------------------------------------------------------------------
    def better(self, a: str, b: str):
        """'A beats B' on mean human score: effect = A - B."""
        estimate = self.diff(a, b)
        return _result(f"{a} - {b}: {seeds.fmt(estimate)}", estimate, [(estimate, 0.0)], self.cost(a, b))

    def equivalent(self, a: str, b: str):
        """'A and B do not differ' on mean human score: |A - B| below the plan's margin (TOST)."""
        margin = plan.EQUIVALENCE_MARGINS[(a, b)]
        estimate = self.diff(a, b)
        return _result(
            f"{a} - {b}: {seeds.fmt(estimate)}, equivalence margin +-{margin:g}",
            estimate,
            [(estimate, _Equivalent(margin))],
            self.cost(a, b),
        )

    def all_better(self, comparisons: list[tuple[str, str]]):
        parts = [self.diff(a, b) for a, b in comparisons]
        text = "; ".join(f"{a} - {b}: {seeds.fmt(e)}" for (a, b), e in zip(comparisons, parts))
        weakest = min(parts, key=lambda e: e.ci_low)
        families = list(dict.fromkeys(name for pair in comparisons for name in pair))
        return _result(text, weakest, [(e, 0.0) for e in parts], self.cost(*families))


def _claims(c: _Checks):
    def beats_diffdpo():
        estimate = c.win(plan.TABLE1_RUN, "diff-dpo")
        return _result(
            f"refdpo vs diff-dpo, {PRIMARY} win rate {seeds.fmt(estimate, percent=True)}",
            estimate,
            [(estimate, 0.5)],
            c.cost(plan.TABLE1_RUN, "diff-dpo"),
        )

    yield "Table 1", "Ours beats Diffusion-DPO under the reward models", beats_diffdpo

    def beats_baselines():
        # human only: it is the weighted sum of the other oracles, so averaging it with them would
        # count them twice (Table 1 shows them as diagnostics).
        parts = {b: c.win(plan.TABLE1_RUN, b) for _, b in plan.TABLE1 if b not in ("diff-dpo", "base")}
        text = f"{PRIMARY} win rate: " + ", ".join(f"{b} {seeds.fmt(e, percent=True)}" for b, e in parts.items())
        weakest = min(parts.values(), key=lambda e: e.ci_low)
        return _result(text, weakest, [(e, 0.5) for e in parts.values()], c.cost(plan.TABLE1_RUN, *parts))

    yield "Table 1", "Ours beats SFT, DSPO, Diffusion-KTO (and MaPO)", beats_baselines

    def explores():
        values = c.paired_seed_values(
            "ref-noreg", "diff-dpo", lambda noreg, fixed: c.final(noreg, "div_ref") - c.final(fixed, "div_policy")
        )
        estimate = seeds.seed_t(values)
        return _result(
            f"final D(ref) of ref-noreg - final D(policy) of diff-dpo, x1e3: "
            f"{seeds.fmt(estimate, scale=1e3, digits=2)}",
            estimate,
            [(estimate, 0.0)],
            scale=1e3,
        )

    yield "Fig. 1(b)", "Diffusion-DPO stays close to the initial model; reference updates move far from it", explores

    def keeps_growing():
        def growth(run):
            series = c.series(run, "div_ref")
            half = series[series["step"] <= series["step"].max() / 2]["div_ref"].iloc[-1]
            return float(series["div_ref"].iloc[-1] - half)

        estimate = seeds.seed_t(c.per_seed("ref-noreg", growth))
        return _result(
            f"ref-noreg D(ref) at the end - at half the steps, x1e3: {seeds.fmt(estimate, scale=1e3, digits=2)}",
            estimate,
            [(estimate, 0.0)],
            scale=1e3,
        )

    yield "Fig. 1(b)", "Without regularisation the reference's divergence keeps growing", keeps_growing

    def margin_grows():
        tail = lambda run: float(c.series(run, "margin").tail(100)["margin"].mean())  # noqa: E731
        estimate = seeds.seed_t(c.paired_seed_values("ref-noreg", "diff-dpo", lambda a, b: tail(a) - tail(b)))
        return _result(
            f"mean margin over the last 100 steps, ref-noreg - diff-dpo, x1e4: "
            f"{seeds.fmt(estimate, scale=1e4, digits=2)}",
            estimate,
            [(estimate, 0.0)],
            scale=1e4,
        )

    yield "Fig. 1(b)", "The implicit reward margin grows under reference updates", margin_grows

    def bounded():
        frozen = c.per_seed("refdpo", lambda run: not reads.ref_events(c.db, [run]).query("kind == 'freeze'").empty)
        values = c.paired_seed_values(
            "ref-noreg", "refdpo", lambda noreg, ours: c.final(noreg, "div_ref") - c.final(ours, "div_ref")
        )
        estimate = seeds.seed_t(values)
        return _result(
            f"refdpo froze in {sum(frozen)} of {len(frozen)} seeds; final D(ref) of ref-noreg - refdpo, x1e3: "
            f"{seeds.fmt(estimate, scale=1e3, digits=2)}",
            estimate,
            [(estimate, 0.0)],
            capped=not all(frozen),
            scale=1e3,
        )

    yield "Fig. 1(b)", "Regularisation keeps the reference near the delta boundary", bounded

    def moderate():
        index = seeds.families(c.db, plan.plan_names(c.regime))
        if len(index) < 6:
            raise _Missing("runs")
        seed_count = min(len(runs) for runs in index.values())

        def thirds(k):
            runs = [runs[k] for runs in index.values()]
            merged = reads.final_divergence(c.db, runs).merge(
                reads.mean_scores(c.db, runs, metrics=[PRIMARY], prompt_set=c.prompt_set), on="run"
            )
            merged = merged.sort_values("div_policy").reset_index(drop=True)
            third = len(merged) // 3
            low, mid, high = (
                merged["mean"][:third],
                merged["mean"][third : len(merged) - third],
                merged["mean"][len(merged) - third :],
            )
            return float(mid.mean() - high.mean()), float(mid.mean() - low.mean())

        pairs = [thirds(k) for k in range(seed_count)]
        hurt, best = seeds.seed_t([p[0] for p in pairs]), seeds.seed_t([p[1] for p in pairs])
        text = (
            f"runs in thirds by final D(policy): mean {PRIMARY} of the middle third - the most divergent "
            f"{seeds.fmt(hurt)}, - the least divergent {seeds.fmt(best)}"
        )
        return _result(text, min((hurt, best), key=lambda e: e.ci_low), [(hurt, 0.0), (best, 0.0)])

    yield "Fig. 1(c)", "Controlled divergence scores best; too much divergence hurts", moderate

    def imbalance():
        def gaps(run):
            stats = reads.timestep_stats(c.db, [run]).sort_values("bin")
            if stats.empty:
                raise _Missing(f"the timestep analysis of {run}")
            noisy, rest = stats.iloc[0], stats.iloc[1:]
            return float(rest.reward_scale.mean() - noisy.reward_scale), float(rest.accuracy.mean() - noisy.accuracy)

        values = c.per_seed("ref-explore", gaps)
        scale, accuracy = seeds.seed_t([v[0] for v in values]), seeds.seed_t([v[1] for v in values])
        text = (
            f"ref-explore, the other intervals - the noisiest: |r_t| x1e4 {seeds.fmt(scale, scale=1e4, digits=2)}, "
            f"accuracy {seeds.fmt(accuracy)}"
        )
        return _result(text, min((scale, accuracy), key=lambda e: e.ci_low), [(scale, 0.0), (accuracy, 0.0)])

    yield "Fig. 2", "The implicit reward is weaker (smaller, less accurate) at the noisy start of generation", imbalance

    yield "Table 3", "A 5x learning rate degrades Diffusion-DPO", lambda: c.better("diff-dpo", "diff-dpo-lr5x")
    yield "Table 3", "beta 1000 does not reach the method's gain", lambda: c.better("refdpo", "diff-dpo-beta1000")
    yield (
        "Table 3",
        "Re-initialising the reference helps a little, less than freezing",
        lambda: c.all_better([("ref-reinit", "diff-dpo"), ("refdpo", "ref-reinit")]),
    )
    yield (
        "Table 4",
        "Timestep-aware training alone does not help Diffusion-DPO",
        lambda: c.equivalent("diff-dpo", "timestep-only"),
    )
    yield "Table 4", "Exploration alone improves on Diffusion-DPO", lambda: c.better("ref-explore", "diff-dpo")
    yield "Table 4", "Timestep-aware training adds to exploration", lambda: c.better("refdpo", "ref-explore")
    yield (
        "Table 4",
        "The reward scale lambda(t) improves both gamma settings",
        lambda: c.all_better([("refdpo-gamma0.8", "refdpo-gamma0.8-constant"), ("refdpo", "refdpo-constant")]),
    )
    sweep = plan.fig4(c.regime)
    noreg, reg = sweep["without regularisation"], sweep["with regularisation"]
    yield "Fig. 4", "Without regularisation, a shorter tau scores lower", lambda: c.better(noreg[-1], noreg[0])
    yield (
        "Fig. 4",
        "With regularisation every tau beats Diffusion-DPO",
        lambda: c.all_better([(run, sweep["baseline"]) for run in reg]),
    )

    def fig5():
        def gap(run_without, run_with, run_relative):
            try:
                table = relative_divergence(c.db, {"without": run_without, "with": run_with}, run_relative)
            except ValueError:
                raise _Missing("timestep analyses") from None
            noisy = table[table["bin"] == table["bin"].min()].set_index("label")["percent"] if not table.empty else {}
            if len(noisy) < 2:
                raise _Missing("timestep analyses")
            return float(noisy["without"] - noisy["with"])

        relative = plan.FIG5["relative_to"]
        without, with_scale = plan.FIG5["runs"]["gamma 0.9 without scale"], plan.FIG5["runs"]["gamma 0.9 + scale"]
        runs = [seeds.family_runs(c.db, f) for f in (without, with_scale, relative)]
        shared = sorted(set(runs[0]) & set(runs[1]) & set(runs[2]))
        if not shared:
            raise _Missing("timestep analyses")
        estimate = seeds.seed_t([gap(runs[0][k], runs[1][k], runs[2][k]) for k in shared])
        return _result(
            f"noisiest interval, D(policy, init) as % of {relative}'s, without scale - with scale: "
            f"{seeds.fmt(estimate, digits=1)} points",
            estimate,
            [(estimate, 0.0)],
        )

    yield "Fig. 5", "The reward scale spends less divergence at early timesteps", fig5


@reads.holding
def check_claims(db, prompt_set: str = "toy-test", *, alpha: float = ALPHA, untestable=()) -> list[Claim]:
    """Every claim, with its verdict from the 95% intervals (``verdict_unadjusted``) and after Holm's
    adjustment over the family of every part of every claim measured (``verdict``). ``untestable``:
    (where, start of the claim) of claims the world cannot test (the regime rule's over-optimisation
    claims in a world that does not show it): measured and shown, judged by no test, outside the
    Holm family."""
    checks = _Checks(db, prompt_set)
    measured, unjudged = [], []
    for where, paper, check in _claims(checks):
        if any(where == w and paper.startswith(start) for w, start in untestable):
            unjudged.append(len(measured))
        try:
            measured.append((where, paper, check()))
        except _Missing as missing:
            measured.append((where, paper, f"needs {missing}"))
    parts = [
        (i, j, _part_p(estimate, null))
        for i, (_, _, result) in enumerate(measured)
        if isinstance(result, _Result) and i not in unjudged
        for j, (estimate, null) in enumerate(result.parts)
    ]
    parts = [(i, j, p) for i, j, p in parts if math.isfinite(p)]
    adjusted = dict(zip(((i, j) for i, j, _ in parts), holm([p for _, _, p in parts], alpha=alpha)[0]))
    out = []
    for i, (where, paper, result) in enumerate(measured):
        if not isinstance(result, _Result):
            out.append(
                Claim(where, paper, result, None, None, None, 0, 0, "not measured", verdict_unadjusted="not measured")
            )
            continue
        held = []
        for j, (estimate, null) in enumerate(result.parts):
            held.append(_part_verdict(estimate, null, adjusted.get((i, j)), alpha))
        final = _cap(_combine(held)) if result.capped else _combine(held)
        if i in unjudged:
            final = UNTESTABLE
        shown = result.shown
        index = next(j for j, (e, _) in enumerate(result.parts) if e is shown)
        shown_p = _part_p(shown, result.parts[index][1])
        finite = math.isfinite(shown_p)
        out.append(
            Claim(
                where,
                paper,
                result.measured,
                shown.effect,
                shown.ci_low,
                shown.ci_high,
                shown.seeds,
                shown.samples,
                final,
                result.cost,
                verdict_unadjusted=UNTESTABLE if i in unjudged else result.verdict,
                p_value=shown_p if finite else None,
                p_adjusted=adjusted.get((i, index)),
                mde=minimum_detectable_effect(shown.se, shown.df) if shown.df > 0 else None,
                interval=shown.method,
                scale=result.scale,
            )
        )
    return out


@reads.holding
def claims_table(db, prompt_set: str = "toy-test", untestable=()) -> pd.DataFrame:
    return pd.DataFrame([vars(c) for c in check_claims(db, prompt_set, untestable=untestable)])


def verdict_counts(claims: pd.DataFrame) -> dict[str, int]:
    """How many claims have each verdict (every verdict, 0 included)."""
    return {name: int((claims["verdict"] == name).sum()) for name in VERDICTS}
