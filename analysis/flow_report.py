"""results/toy-flow/: the flow-matching toy world's report, and its verdicts beside the UNet world's.

The flow world trains the plan's runs of Table 1 (refdpo against Diff-DPO), Fig. 1(b), Fig. 2 and
Fig. 4 (``reproduce_plan.FLOW_RUNS``). Its claims are judged by the same code as the UNet world's
(``analysis.claims``); both reports write ``claims.csv``, and the comparison is a join of the two
on the claim, written into results/README.md between markers, so either reproduction can
rewrite it without touching the rest.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from refbench.experiments import reproduce_plan as plan

from . import figures, tables

__all__ = ["figures_for", "flow_readme", "comparison_section", "update_comparison", "QUESTION"]

QUESTION = "Do the paper's findings hold for rectified flow?"
BEGIN = "<!-- rectified-flow: written by `refbench reproduce --world toy-flow` (and kept by `refbench reproduce`) -->"
END = "<!-- /rectified-flow -->"


def figures_for(fig3_runs: list[str]) -> dict:
    """The flow report's figures: file name -> (description, draw(db, out))."""
    timestep_runs = [r for r in plan.TIMESTEP_RUNS if r in plan.FLOW_RUNS]
    return {
        "fig1b_kl.png": (
            "Fig. 1(b): reward margin and divergence from the initial model",
            lambda db, out: figures.plot_kl(db, plan.FIG1B, out=out),
        ),
        "fig2_timestep.png": (
            "Fig. 2: loss, |r_t|, accuracy and lambda(t) per interval of the noise level s",
            lambda db, out: figures.plot_timestep(db, timestep_runs, out=out),
        ),
        "fig3_samples.png": (
            "Fig. 3's layout: the same prompt and seed under each method (training seed 0)",
            lambda db, out: figures.plot_samples(db, fig3_runs, out=out),
        ),
        "fig4_tau.png": (
            "Fig. 4: mean human score against tau, with and without regularisation",
            lambda db, out: figures.plot_tau(
                db, {k: v for k, v in plan.FIG4.items() if k != "baseline"}, baseline=plan.FIG4["baseline"], out=out
            ),
        ),
    }


def flow_readme(markdown, claims, claims_md, fields: dict[str, str], span="") -> str:
    """The flow world's README; ``fields`` are ``report.readme_fields``."""
    summary, training_seeds, stamp, timing = (
        fields["summary"],
        fields["training_seeds"],
        fields["stamp"],
        fields["timing"],
    )
    figure_lines, failures, settings_md = fields["figure_lines"], fields["failures"], fields["settings_md"]
    return f"""# The flow-matching toy world: the paper's central findings on rectified flow

Written by `{fields["command"]}` on {stamp} ({fields["machine"]}, {timing}).{span}
Every number below is read from the store exported in `data/`.

The world: the UNet toy world's prompts, oracle rewards and preference pairs, with the base model
replaced by a 16 px pixel-space `SD3Transformer2DModel` (rectified flow, 1.96 M parameters,
`FlowMatchEulerDiscreteScheduler` with shift 1) that reads the UNet world's frozen text encoder
(`refbench toy pretrain --world flow`). The runs use the toy-flow preset: the toy preset with
beta 1000 and delta 0.01 (beta / 5 and delta x 5: the base model's velocity errors are 5.0 times
the UNet's epsilon errors, measured), each under {training_seeds} training seeds, every run
evaluated on the same 42 toy-test prompts x 2 evaluation seeds. The plan trains the runs of
Table 1's refdpo-vs-Diff-DPO row, Fig. 1(b), Fig. 2 and Fig. 4; the claims of Tables 3 and 4, Fig.
1(c) and Fig. 5 were not run here. How the method is translated (timesteps, lambda(t), D) is in the
project's `docs/flow.md`.

## The paper's claims on rectified flow

**{summary}** (of {len(claims)} claims), judged as in the UNet world's early-regime report (`../early-regime/README.md`), whose settings this world shares.
{fields.get("lambda_note", "")}

{claims_md}

## What each method costs (means over training seeds)

{markdown["costs.md"]}

## Table 1: win rates of refdpo (%, 95% interval over training seeds and paired samples, ties count half)

{markdown["table1.md"]}

## Fig. 2: timestep analysis (against each run's reference; intervals of the noise level s, the noisiest first)

{markdown["timestep"]}

## Figures

{figure_lines}

## Runs

{settings_md}

Failed runs: {failures}
"""


def _unet_claims(results_root: Path) -> pd.DataFrame | None:
    """The UNet world's claims: its claims.csv, or computed from its parquet export (a results/
    written before claims.csv existed)."""
    path = Path(results_root) / "claims.csv"
    if path.is_file():
        return pd.read_csv(path)
    data = Path(results_root) / "data"
    if not (data / "runs.parquet").is_file():
        return None
    import tempfile

    from refbench.store import Store

    from .claims import claims_table

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "unet.duckdb")
        store.import_parquet(data)
        claims = claims_table(store.path)
    claims.drop(columns=["cost"]).to_csv(path, index=False)
    return claims


def lambda_note(db, runs: list[str]) -> str:
    """What lambda(t) is on the flow grid, from the stored timestep analyses: near 1 everywhere, refdpo
    on flow is refdpo without its reward scale, which every claim about refdpo here inherits."""
    from . import reads

    values = reads.timestep_stats(db, runs)["lambda_t"].dropna() if runs else None
    if values is None or values.empty:
        return ""
    return (
        f"\nNote on every claim about refdpo here: on this grid lambda(t) = 1 + norm(1/sqrt(SNR)) has a mean "
        f"of {values.mean():.4f} over the analysed intervals (range {values.min():.4f} to "
        f"{values.max():.4f}), so refdpo on flow is in effect refdpo without its reward scale: these "
        "claims test the timestep sampler and the reference updates, not lambda(t)."
    )


def comparison_section(unet_folder: Path, flow_folder: Path | None = None) -> str:
    """The side-by-side verdicts of the UNet world's results in ``unet_folder`` (the early regime's,
    which the flow world shares) and the flow world's in ``flow_folder`` (default: toy-flow/ beside
    the UNet folder's parent, results/toy-flow/), between markers; "" while either has no claims."""
    flow_folder = Path(flow_folder) if flow_folder is not None else Path(unet_folder).parent / "toy-flow"
    flow_path = flow_folder / "claims.csv"
    unet = _unet_claims(unet_folder) if flow_path.is_file() else None
    if unet is None:
        return ""
    flow = pd.read_csv(flow_path)
    both = flow.merge(unet, on=["where", "paper"], how="left", suffixes=("_flow", "_unet"))

    def cell(measured, verdict) -> str:
        return f"**{verdict}**: {measured}" if isinstance(verdict, str) else "not run"

    table = pd.DataFrame(
        {
            "where": both["where"],
            "the paper says": both["paper"],
            "UNet toy world (DDPM, epsilon)": [cell(m, v) for m, v in zip(both["measured_unet"], both["verdict_unet"])],
            "flow toy world (rectified flow, velocity)": [
                cell(m, v) for m, v in zip(both["measured_flow"], both["verdict_flow"])
            ],
        }
    )
    agree = int((both["verdict_flow"] == both["verdict_unet"]).sum())
    holds = int((both["verdict_flow"] == "holds").sum())
    return f"""
{BEGIN}
## {QUESTION}

The same claims, judged by the same code, in the flow-matching toy world (`../toy-flow/README.md`:
a 16 px SD3 transformer trained with rectified flow on the same prompts, pairs and oracles, the
paper's method translated as the project's `docs/flow.md` states). Of the {len(both)}
claims its plan measures, {holds} hold on rectified flow, and {agree} have the verdict they have
in the UNet world.

{tables.to_markdown(table)}
{END}
"""


def update_comparison(unet_folder: Path, flow_folder: Path) -> list[Path]:
    """Write the comparison into the UNet world's README (``unet_folder``: the early regime's, whose
    settings the flow world shares), replacing an earlier one; returns the files written (nothing
    while that README is missing)."""
    readme = Path(unet_folder) / "README.md"
    if not readme.is_file():
        return []
    section = comparison_section(unet_folder, flow_folder)
    if not section:
        return []
    text = readme.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head.rstrip("\n") + "\n" + section + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n" + section
    readme.write_text(text)
    return [readme, Path(unet_folder) / "claims.csv"]
