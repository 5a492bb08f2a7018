"""The paper's claims, checked one by one against the store.

Every check reads numbers, states what was measured and returns a verdict: "holds",
"does not hold", or "not measured" (a run it needs is missing). Score comparisons use the
hidden "human" oracle, the toy's analogue of PickScore (the paper's Fig. 4 metric); win
rates count as a win when their 95% interval lies above 50%.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from refbench.experiments import reproduce_plan as plan

from . import reads
from .figures import relative_divergence

__all__ = ["Claim", "check_claims", "claims_table"]

PRIMARY = "human"


@dataclass(frozen=True)
class Claim:
    where: str
    paper: str
    measured: str
    verdict: str


class _Missing(Exception):
    pass


class _Numbers:
    """Cached lookups; a missing number raises _Missing, which turns a claim into 'not measured'."""

    def __init__(self, db, prompt_set: str):
        self.db, self.prompt_set = db, prompt_set
        runs = [s.name for s in plan.PLAN] + ["base"]
        self.scores = reads.mean_scores(db, runs, prompt_set=prompt_set)
        self.curves = reads.train_curves(db, [s.name for s in plan.PLAN])
        self.winrates = reads.winrates(db, plan.TABLE1_RUN, [b for _, b in plan.TABLE1], prompt_set)

    def score(self, run: str, metric: str = PRIMARY) -> float:
        hit = self.scores[(self.scores["run"] == run) & (self.scores["metric"] == metric)]
        if hit.empty:
            raise _Missing(run)
        return float(hit["mean"].iloc[0])

    def series(self, run: str, column: str) -> pd.DataFrame:
        hit = self.curves[self.curves["run"] == run].dropna(subset=[column])
        if hit.empty:
            raise _Missing(run)
        return hit

    def final(self, run: str, column: str) -> float:
        return float(self.series(run, column)[column].iloc[-1])

    def winrate(self, baseline: str, metric: str = PRIMARY) -> pd.Series:
        hit = self.winrates[(self.winrates["baseline"] == baseline) & (self.winrates["metric"] == metric)]
        if hit.empty:
            raise _Missing(baseline)
        return hit.iloc[0]

    def timestep(self, run: str) -> pd.DataFrame:
        stats = reads.timestep_stats(self.db, [run])
        if stats.empty:
            raise _Missing(run)
        return stats.sort_values("bin")


def _verdict(ok: bool) -> str:
    return "holds" if ok else "does not hold"


def _checks(n: _Numbers):
    def beats_diffdpo():
        w = n.winrate("diff-dpo")
        text = f"refdpo vs diff-dpo, {PRIMARY} win rate {100 * w.rate:.1f}% [{100 * w.ci_low:.1f}, {100 * w.ci_high:.1f}], n={w.n}"
        return text, _verdict(w.ci_low > 0.5)
    yield "Table 1", "Ours beats Diffusion-DPO under the reward models", beats_diffdpo

    def beats_baselines():
        parts, ok = [], True
        for label, baseline in plan.TABLE1:
            if baseline in ("diff-dpo", "base"):
                continue
            rates = n.winrates[n.winrates["baseline"] == baseline]["rate"]
            if rates.empty:
                raise _Missing(baseline)
            parts.append(f"{baseline} {100 * rates.mean():.1f}%")
            ok = ok and rates.mean() > 0.5
        return "mean win rate over the five metrics: " + ", ".join(parts), _verdict(ok)
    yield "Table 1", "Ours beats SFT, DSPO, Diffusion-KTO (and MaPO)", beats_baselines

    def explores():
        fixed, noreg = n.final("diff-dpo", "div_policy"), n.final("ref-noreg", "div_ref")
        return f"final D x1e3: diff-dpo policy {1e3 * fixed:.2f}, ref-noreg reference {1e3 * noreg:.2f}", _verdict(noreg > 3 * abs(fixed))
    yield "Fig. 1(b)", "Diffusion-DPO stays close to the initial model; reference updates move far from it", explores

    def keeps_growing():
        series = n.series("ref-noreg", "div_ref")
        half = series[series["step"] <= series["step"].max() / 2]["div_ref"].iloc[-1]
        end = series["div_ref"].iloc[-1]
        return f"ref-noreg D(ref) x1e3: {1e3 * half:.2f} at half the steps, {1e3 * end:.2f} at the end", _verdict(end > half)
    yield "Fig. 1(b)", "Without regularisation the reference's divergence keeps growing", keeps_growing

    def margin_grows():
        tail = lambda run: n.series(run, "margin").tail(100)["margin"].mean()  # noqa: E731
        noreg, fixed = tail("ref-noreg"), tail("diff-dpo")
        return (f"mean margin over the last 100 steps x1e4: ref-noreg {1e4 * noreg:.2f}, diff-dpo {1e4 * fixed:.2f}",
                _verdict(noreg > fixed))
    yield "Fig. 1(b)", "The implicit reward margin grows under reference updates", margin_grows

    def bounded():
        delta = reads.run_settings(n.db, ["refdpo"])
        if delta.empty:
            raise _Missing("refdpo")
        events = reads.ref_events(n.db, ["refdpo"])
        frozen = events[events["kind"] == "freeze"]
        final = n.final("refdpo", "div_ref")
        where = f"froze at step {int(frozen['step'].iloc[0])}" if not frozen.empty else "never froze"
        noreg = n.final("ref-noreg", "div_ref")
        return (f"refdpo {where}; final D(ref) x1e3 {1e3 * final:.2f} against ref-noreg's {1e3 * noreg:.2f}",
                _verdict(not frozen.empty and final < noreg))
    yield "Fig. 1(b)", "Regularisation keeps the reference near the delta boundary", bounded

    def moderate():
        divergence = reads.final_divergence(n.db, [s.name for s in plan.PLAN])
        merged = divergence.merge(n.scores[n.scores["metric"] == PRIMARY], on="run").sort_values("div_policy")
        if len(merged) < 3:
            raise _Missing("runs")
        best = merged.loc[merged["mean"].idxmax()]
        rank = list(merged["run"]).index(best["run"])
        return (f"best {PRIMARY} score {best['mean']:.3f} by {best['run']}, divergence rank {rank + 1} of {len(merged)}",
                _verdict(0 < rank < len(merged) - 1))
    yield "Fig. 1(c)", "Controlled divergence scores best; too much divergence hurts", moderate

    def imbalance():
        stats = n.timestep("ref-explore")
        noisy, rest = stats.iloc[0], stats.iloc[1:]
        text = (f"ref-explore, noisiest interval vs the rest: |r_t| {noisy.reward_scale:.2e} vs {rest.reward_scale.mean():.2e}, "
                f"accuracy {noisy.accuracy:.3f} vs {rest.accuracy.mean():.3f}")
        return text, _verdict(noisy.reward_scale < rest.reward_scale.mean() and noisy.accuracy < rest.accuracy.mean())
    yield "Fig. 2", "The implicit reward is weaker (smaller, less accurate) at the noisy start of generation", imbalance

    def order(runs, label):
        values = [n.score(r) for r in runs]
        text = ", ".join(f"{r} {v:.3f}" for r, v in zip(runs, values))
        return text, values

    def lr_collapse():
        text, (base, fast) = order(["diff-dpo", "diff-dpo-lr5x"], "")
        return text, _verdict(fast < base)
    yield "Table 3", "A 5x learning rate degrades Diffusion-DPO", lr_collapse

    def beta_no_help():
        text, (base, low_beta, ours) = order(["diff-dpo", "diff-dpo-beta1000", "refdpo"], "")
        return text, _verdict(low_beta < ours)
    yield "Table 3", "beta 1000 does not reach the method's gain", beta_no_help

    def reinit():
        text, (base, reinit_score, ours) = order(["diff-dpo", "ref-reinit", "refdpo"], "")
        return text, _verdict(base < reinit_score < ours)
    yield "Table 3", "Re-initialising the reference helps a little, less than freezing", reinit

    def time_only():
        text, (base, only) = order(["diff-dpo", "timestep-only"], "")
        return text, _verdict(only < base)
    yield "Table 4", "Timestep-aware training alone does not help Diffusion-DPO", time_only

    def exploration():
        text, (base, explore) = order(["diff-dpo", "ref-explore"], "")
        return text, _verdict(explore > base)
    yield "Table 4", "Exploration alone improves on Diffusion-DPO", exploration

    def synergy():
        text, (explore, ours) = order(["ref-explore", "refdpo"], "")
        return text, _verdict(ours > explore)
    yield "Table 4", "Timestep-aware training adds to exploration", synergy

    def scale():
        text, values = order(["refdpo-gamma0.8-constant", "refdpo-gamma0.8", "refdpo-constant", "refdpo"], "")
        return text, _verdict(values[1] > values[0] and values[3] > values[2])
    yield "Table 4", "The reward scale lambda(t) improves both gamma settings", scale

    def tau_noreg():
        runs = plan.FIG4["without regularisation"]
        text, values = order(runs, "")
        return text + " (tau 4, 8, 16)", _verdict(values[0] < values[-1])
    yield "Fig. 4", "Without regularisation, a shorter tau scores lower", tau_noreg

    def tau_reg():
        runs = plan.FIG4["with regularisation"]
        text, values = order(runs, "")
        base = n.score(plan.FIG4["baseline"])
        return text + f"; diff-dpo {base:.3f}", _verdict(min(values) > base)
    yield "Fig. 4", "With regularisation every tau beats Diffusion-DPO", tau_reg

    def fig5():
        try:
            table = relative_divergence(n.db, plan.FIG5["runs"], plan.FIG5["relative_to"])
        except ValueError:  # none of the runs has a timestep analysis
            raise _Missing("timestep analyses") from None
        if table.empty:
            raise _Missing("timestep analyses")
        noisy = table[table["bin"] == table["bin"].min()].set_index("run")["percent"]
        if not {"refdpo", "refdpo-constant"} <= set(noisy.index):
            raise _Missing("timestep analyses")
        return (f"noisiest interval, D(policy, init) as % of ref-explore's: with scale {noisy['refdpo']:.0f}%, "
                f"without {noisy['refdpo-constant']:.0f}%", _verdict(noisy["refdpo"] < noisy["refdpo-constant"]))
    yield "Fig. 5", "The reward scale spends less divergence at early timesteps", fig5


def check_claims(db, prompt_set: str = "toy-test") -> list[Claim]:
    numbers = _Numbers(db, prompt_set)
    out = []
    for where, paper, check in _checks(numbers):
        try:
            measured, verdict = check()
        except _Missing as missing:
            measured, verdict = f"needs {missing}", "not measured"
        out.append(Claim(where, paper, measured, verdict))
    return out


def claims_table(db, prompt_set: str = "toy-test") -> pd.DataFrame:
    return pd.DataFrame([vars(c) for c in check_claims(db, prompt_set)])
