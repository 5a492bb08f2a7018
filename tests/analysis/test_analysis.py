"""The analysis package (figures, tables, claims, report, load_results) and `refbench plot`, on the
synthetic store of tests/analysis_store.py, whose numbers are designed so that the results are
known by hand."""

from __future__ import annotations

import shutil

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from analysis_store import EXPECTED_VERDICTS
from cli_helpers import run_refbench as refbench

from analysis import figures, load_results, reads, tables
from analysis.claims import check_claims
from analysis.report import FIGURES, write_report
from refbench.experiments import reproduce_plan as plan
from refbench.store import TABLES, Store

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def store_copy(synthetic_store, tmp_path):
    """A private copy of the synthetic store, for tests that delete rows."""
    path = tmp_path / "copy.duckdb"
    shutil.copy(synthetic_store, path)
    return Store(path)


def assert_png(path):
    assert path.is_file() and path.read_bytes()[:8] == PNG and path.stat().st_size > 5000


# -- figures ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "draw",
    [
        lambda db, out: figures.plot_kl(db, plan.FIG1B, out=out),
        lambda db, out: figures.plot_divergence_vs_score(db, [s.name for s in plan.PLAN], out=out),
        lambda db, out: figures.plot_timestep(db, plan.TIMESTEP_RUNS, out=out),
        lambda db, out: figures.plot_tau(db, {k: v for k, v in plan.FIG4.items() if k != "baseline"}, out=out),
        lambda db, out: figures.plot_divergence_by_timestep(
            db, plan.FIG5["runs"], relative_to=plan.FIG5["relative_to"], out=out
        ),
    ],
    ids=["kl", "divergence-vs-score", "timestep", "tau", "divergence-by-timestep"],
)
def test_every_figure_writes_a_png(synthetic_store, tmp_path, draw):
    out = tmp_path / "sub" / "figure.png"  # the folder is created
    figure = draw(synthetic_store, out)
    assert figure.axes
    assert_png(out)


def test_a_figure_without_data_is_a_value_error(synthetic_store):
    with pytest.raises(ValueError, match="nothing to plot"):
        figures.plot_kl(synthetic_store, ["no-such-run"])


def test_relative_divergence_percentages(synthetic_store):
    """ref-explore's divergence is 0.004 in every interval (= 100%); refdpo-constant's 0.0036 in every
    interval -> 90%; refdpo's 0.001 in the noisiest interval (bin 0) -> 25%, 0.005 elsewhere -> 125%."""
    table = figures.relative_divergence(synthetic_store, plan.FIG5["runs"], plan.FIG5["relative_to"])
    assert len(table) == 2 * 10
    assert set(table["label"]) == {"gamma 0.9 without scale", "gamma 0.9 + scale"}
    percent = table.set_index(["run", "bin"])["percent"]
    assert percent[("refdpo-constant", 0)] == pytest.approx(90.0)
    assert percent[("refdpo-constant", 9)] == pytest.approx(90.0)
    assert percent[("refdpo", 0)] == pytest.approx(25.0)
    assert all(percent[("refdpo", b)] == pytest.approx(125.0) for b in range(1, 10))
    noisiest = table[table["bin"] == 0].iloc[0]
    assert (noisiest["t_low"], noisiest["t_high"]) == (900, 1000)
    # over training seeds (Fig. 5 and its notebook): one seed per family here, so the same numbers
    pooled = figures.divergence_by_timestep(synthetic_store, plan.FIG5["runs"], relative_to=plan.FIG5["relative_to"])
    assert len(pooled) == 2 * 10 and (pooled["seeds"] == 1).all()
    assert pooled.set_index(["label", "bin"])["percent"][("gamma 0.9 + scale", 0)] == pytest.approx(25.0)


# -- tables ------------------------------------------------------------------------------------------


def bold_cells(frame):
    return {
        (row["run"], metric)
        for _, row in frame.iterrows()
        for metric in tables.TOY_METRICS
        if str(row[metric]).startswith("**")
    }


def test_raw_score_table3_bolds_the_best_value_of_each_metric(synthetic_store):
    """Means by construction (human; colour = human - 0.1, +0.2 for beta1000; count = human - 0.2;
    shape = human - 0.05, +0.2 for diff-dpo; aesthetic = human - 0.3):

        row             human  colour  count  shape  aesthetic
        diff-dpo        0.600  0.500   0.400  0.750  0.300
        diff-dpo-lr5x   0.500  0.400   0.300  0.450  0.200
        beta1000        0.610  0.710   0.410  0.560  0.310
        ref-reinit      0.640  0.540   0.440  0.590  0.340
        refdpo          0.700  0.600   0.500  0.650  0.400

    so the bold cells are refdpo's human, count and aesthetic, beta1000's colour, diff-dpo's shape.
    """
    frame = tables.raw_score_table(synthetic_store, plan.TABLE3)
    assert list(frame.columns) == ["model", "run", *tables.TOY_METRICS, "seeds"]
    assert list(frame["model"]) == ["Diff-DPO", "LR x5", "beta = 1000", "Re-Init", "Ours"]
    assert bold_cells(frame) == {
        ("refdpo", "human"),
        ("diff-dpo-beta1000", "colour"),
        ("refdpo", "count"),
        ("diff-dpo", "shape"),
        ("refdpo", "aesthetic"),
    }
    cells = frame.set_index("run")
    assert cells.loc["diff-dpo-beta1000", "colour"].startswith("**0.710** [")
    assert cells.loc["diff-dpo", "shape"].startswith("**0.750** [")
    assert cells.loc["diff-dpo-lr5x", "human"].startswith("0.500 [")
    assert cells.loc["ref-reinit", "aesthetic"].startswith("0.340 [")
    assert set(frame["seeds"]) == {1}


def test_raw_score_table4_bolds_the_best_value_of_each_metric(synthetic_store):
    """Same construction (count +0.2 for timestep-only):

        row                        human  colour  count  shape  aesthetic
        diff-dpo                   0.600  0.500   0.400  0.750  0.300
        timestep-only              0.605  0.505   0.605  0.555  0.305
        ref-explore                0.650  0.550   0.450  0.600  0.350
        refdpo-gamma0.8-constant   0.630  0.530   0.430  0.580  0.330
        refdpo-gamma0.8            0.660  0.560   0.460  0.610  0.360
        refdpo-constant            0.670  0.570   0.470  0.620  0.370
        refdpo                     0.700  0.600   0.500  0.650  0.400

    Bold: refdpo's human, colour and aesthetic; timestep-only's count; diff-dpo's shape. (colour's
    best here is refdpo: beta1000, the overall best, is not a row of Table 4.)
    """
    frame = tables.raw_score_table(synthetic_store, plan.TABLE4)
    assert len(frame) == 7
    assert bold_cells(frame) == {
        ("refdpo", "human"),
        ("refdpo", "colour"),
        ("timestep-only", "count"),
        ("diff-dpo", "shape"),
        ("refdpo", "aesthetic"),
    }
    cells = frame.set_index("run")
    assert cells.loc["timestep-only", "count"].startswith("**0.605** [")
    assert cells.loc["refdpo-gamma0.8", "human"].startswith("0.660 [")


def test_raw_score_table_leaves_out_missing_runs_and_digits(synthetic_store):
    frame = tables.raw_score_table(synthetic_store, [("Ours", "refdpo"), ("missing", "no-such-run")], digits=2)
    assert list(frame["run"]) == ["refdpo"]
    assert frame.loc[0, "human"].startswith("**0.70** [")  # the only row is the best of every metric


def test_winrate_table_cells(synthetic_store):
    """Win rates from the paired samples (2 prompts x 2 seeds = 4 per run, one training seed): sample i
    of every run carries the same offset, so each pair compares the designed means. refdpo's means
    (0.700 human, -0.1 colour, -0.2 count, -0.05 shape, -0.3 aesthetic) beat every baseline's on every
    metric, except diff-dpo's shape (bumped +0.2: 0.750 against refdpo's 0.650): 100% on 4 of 4 pairs,
    and 0% there; a rate that is the same on every pair has the point interval [r, r]. Costs per step
    (image-passes, forward + backward): diff-dpo 16 + 16 policy and 16 reference forwards = 32+16;
    sft 8 winners = 8+8; mapo no reference = 16+16; base is not trained. The average leaves out human
    (the weighted sum of the others): diff-dpo (100 + 100 + 0 + 100) / 4 = 75.0."""
    frame = tables.winrate_table(synthetic_store, plan.TABLE1_RUN, plan.TABLE1)
    assert list(frame.columns) == [
        "",
        *tables.TOY_METRICS,
        "avg of sub-scores",
        "seeds x n",
        "cost (fwd+bwd passes/step)",
    ]
    assert list(frame[""]) == [f"refdpo {label}" for label, _ in plan.TABLE1]
    rows = frame.set_index("")
    diff_dpo = rows.loc["refdpo vs. Diff-DPO"]
    assert [diff_dpo[m] for m in tables.TOY_METRICS] == [
        "100.0 [100.0, 100.0]",
        "100.0 [100.0, 100.0]",
        "100.0 [100.0, 100.0]",
        "0.0 [0.0, 0.0]",
        "100.0 [100.0, 100.0]",
    ]
    assert diff_dpo["avg of sub-scores"] == "75.0" and diff_dpo["seeds x n"] == "1 x 4"
    assert rows.loc["refdpo vs. MaPO", "avg of sub-scores"] == "100.0"
    assert rows.loc["refdpo vs. base model", "human"] == "100.0 [100.0, 100.0]"
    assert [
        rows.loc[f"refdpo vs. {b}", "cost (fwd+bwd passes/step)"] for b in ("Diff-DPO", "SFT", "MaPO", "base model")
    ] == ["32+16", "8+8", "16+16", ""]
    markdown = tables.to_markdown(frame).splitlines()
    assert markdown[0] == (
        "|  | human | colour | count | shape | aesthetic | avg of sub-scores | seeds x n | cost (fwd+bwd passes/step) |"
    )
    assert markdown[1] == "|---|---|---|---|---|---|---|---|---|"
    assert len(markdown) == 2 + len(plan.TABLE1)


def test_winrate_table_skips_baselines_without_rows(synthetic_store):
    frame = tables.winrate_table(
        synthetic_store, plan.TABLE1_RUN, [("vs. SFT", "sft"), ("vs. nobody", "nobody")], metrics=["human"]
    )
    assert list(frame.columns) == ["", "human", "avg of sub-scores", "seeds x n", "cost (fwd+bwd passes/step)"]
    assert (
        list(frame[""]) == ["refdpo vs. SFT"] and frame.loc[0, "avg of sub-scores"] == ""
    )  # human alone: no sub-scores


# -- claims ------------------------------------------------------------------------------------------


def assert_verdicts(claims, expected):
    assert len(claims) == len(expected)
    for claim, (where, phrase, verdict) in zip(claims, expected):
        assert claim.where == where and phrase in claim.paper, (claim, phrase)
        assert claim.verdict == verdict, (claim.paper, claim.measured)


def test_check_claims_gives_the_verdicts_built_in(synthetic_store):
    claims = check_claims(synthetic_store)
    assert_verdicts(claims, EXPECTED_VERDICTS)
    by_phrase = {c.paper: c for c in claims}
    froze = next(c for p, c in by_phrase.items() if "delta boundary" in p)
    assert froze.measured.startswith("refdpo froze in 1 of 1 seeds")
    lr = next(c for p, c in by_phrase.items() if "5x learning rate" in p)
    assert lr.measured == "diff-dpo - diff-dpo-lr5x: 0.100 [0.100, 0.100]"
    assert (lr.seeds, lr.samples) == (1, 4) and lr.effect == pytest.approx(0.1)
    assert lr.cost == "diff-dpo 32+16 passes/step, 80 s; diff-dpo-lr5x 32+16 passes/step, 80 s"
    margin = next(c for p, c in by_phrase.items() if "margin" in p)
    assert margin.samples == 1  # measured once per training run: seeds are its only level
    # one seed, constant differences: every score part has p = 0, so Holm changes no verdict; a value
    # measured once (one seed) has no p-value and keeps its interval's verdict
    assert [c.verdict for c in claims] == [c.verdict_unadjusted for c in claims]
    assert (lr.p_value, lr.p_adjusted, lr.mde) == (0.0, 0.0, 0.0) and lr.interval.startswith("t over prompts")
    assert margin.p_value is None and margin.p_adjusted is None and margin.mde is None


def _expect_not_measured(phrases):
    return [(w, p, "not measured" if any(x in p for x in phrases) else v) for w, p, v in EXPECTED_VERDICTS]


def test_claims_without_a_run_are_not_measured(store_copy):
    store_copy.delete("timestep_stats", run="ref-explore")  # Fig. 2's run and Fig. 5's 100%
    with store_copy.connect() as con:  # diff-dpo-lr5x's samples (its scores no longer join)
        con.execute("DELETE FROM samples WHERE run = 'diff-dpo-lr5x'")
    claims = check_claims(store_copy)
    assert_verdicts(claims, _expect_not_measured(["noisy start", "early timesteps", "5x learning rate"]))
    assert [c.measured for c in claims if c.verdict == "not measured"] == [
        "needs the timestep analysis of ref-explore",
        "needs human scores of diff-dpo and diff-dpo-lr5x",
        "needs timestep analyses",
    ]


def test_claims_without_any_timestep_analysis_are_not_measured(store_copy):
    """Regression: Fig. 5's check used to raise ValueError (from relative_divergence) instead."""
    with store_copy.connect() as con:
        con.execute("DELETE FROM timestep_stats")
    assert_verdicts(check_claims(store_copy), _expect_not_measured(["noisy start", "early timesteps"]))


def test_claims_on_an_empty_store_are_all_not_measured(tmp_path):
    assert {c.verdict for c in check_claims(Store(tmp_path / "empty.duckdb"))} == {"not measured"}


# -- report, parquet, load_results ---------------------------------------------------------------------


def test_write_report(synthetic_store, tmp_path):
    results = tmp_path / "results"
    written = write_report(synthetic_store, results, seconds=90.0, failed={"mapo": "failed (exit 1)"})
    for name in ("README.md", "table1.md", "table3.md", "table4.md", "timestep_analysis.md", *FIGURES):
        assert results / name in written and (results / name).stat().st_size > 0
    for name in FIGURES:
        assert_png(results / name)
    assert sorted(p.name for p in (results / "data").iterdir()) == sorted(f"{t}.parquet" for t in TABLES)
    assert (results / "table3.md").read_text() == tables.to_markdown(
        tables.raw_score_table(synthetic_store, plan.TABLE3)
    ) + "\n"
    readme = (results / "README.md").read_text()
    counted = {v: sum(1 for _, _, e in EXPECTED_VERDICTS if e == v) for v in ("holds", "inconclusive", "contradicted")}
    assert (
        f"**{counted['holds']} holds, {counted['inconclusive']} inconclusive, {counted['contradicted']} contradicted** "
        f"(of {len(EXPECTED_VERDICTS)} claims, after Holm's adjustment)"
    ) in readme
    assert "1.5 minutes" in readme and "- mapo: failed (exit 1)" in readme
    assert "not drawn" not in readme
    assert "| refdpo vs. Diff-DPO | 100.0 [100.0, 100.0] |" in readme
    # 32 pairs at accuracy 0.5: Wilson 95% centre (0.5 + z^2/64) / (1 + z^2/32) = 0.5, half-width
    # z sqrt(0.25/32 + z^2/4096) / (1 + z^2/32) = 1.95996 * sqrt(0.0078125 + 0.0009379) / 1.120046
    # = 1.95996 * 0.093543 / 1.120046 = 0.163692
    assert (
        "| ref-explore | 900-1000 | 32 | 2.000e-02 | 1.000e-04 | 0.500 [0.336, 0.664] |"
        in (results / "timestep_analysis.md").read_text()
    )
    copied = sorted((results / "samples").rglob("*.png"))  # Fig. 3's images, for a clone without runs/
    assert len(copied) == len(plan.FIG3) * 4


def test_write_report_on_an_empty_store_reports_instead_of_failing(tmp_path):
    results = tmp_path / "results"
    write_report(Store(tmp_path / "empty.duckdb"), results)
    assert (results / "table1.md").read_text() == "(no data)\n"
    readme = (results / "README.md").read_text()
    assert "**0 holds, 0 inconclusive, 0 contradicted, 18 not measured**" in readme and readme.count(
        "not drawn: nothing to plot"
    ) == len(FIGURES)


def counts(store):
    return {t: int(store.query(f"SELECT count(*) AS n FROM {t}")["n"][0]) for t in TABLES}


def test_parquet_export_and_import_round_trip(synthetic_store, tmp_path):
    source = Store(synthetic_store)
    written = source.export_parquet(tmp_path / "data")
    assert sorted(p.name for p in written) == sorted(f"{t}.parquet" for t in TABLES)
    fresh = Store(tmp_path / "fresh.duckdb")
    expected = counts(source)
    assert all(expected.values())
    assert fresh.import_parquet(tmp_path / "data") == sum(expected.values())
    assert counts(fresh) == expected
    fresh.import_parquet(tmp_path / "data")  # rows with the same key are replaced, not duplicated
    assert counts(fresh) == expected
    assert fresh.get_run("refdpo")["config"]["method"]["reward_scale"] == "inv-sqrt-snr"


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No REFBENCH_DB, a working directory without results/, and no repository results/ either."""
    monkeypatch.delenv("REFBENCH_DB", raising=False)
    monkeypatch.delenv("REFBENCH_RESULTS", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(reads, "__file__", str(tmp_path / "repo" / "analysis" / "reads.py"))
    return tmp_path


def test_load_results_reads_refbench_db_and_db_first(synthetic_store, clean_env, monkeypatch):
    monkeypatch.setenv("REFBENCH_DB", str(synthetic_store))
    assert load_results().path == synthetic_store
    other = Store(clean_env / "other.duckdb")
    assert load_results(other.path).path == other.path


def test_load_results_falls_back_to_the_parquet_export(synthetic_store, clean_env, monkeypatch):
    Store(synthetic_store).export_parquet(clean_env / "exported" / "data")
    monkeypatch.setenv("REFBENCH_DB", str(clean_env / "missing.duckdb"))  # not a file: ignored
    monkeypatch.setenv("REFBENCH_RESULTS", str(clean_env / "exported"))
    store = load_results()
    assert store.path != synthetic_store and store.path.suffix == ".duckdb"
    assert counts(store) == counts(Store(synthetic_store))
    assert tables.raw_score_table(store, plan.TABLE3).equals(tables.raw_score_table(synthetic_store, plan.TABLE3))


def test_load_results_falls_back_to_the_repository_results(synthetic_store, clean_env):
    """A notebook runs in notebooks/: the repository's results/ is found from there too."""
    Store(synthetic_store).export_parquet(clean_env / "repo" / "results" / "data")
    assert counts(load_results()) == counts(Store(synthetic_store))
    shutil.copy(synthetic_store, clean_env / "repo" / "results" / "reproduce.duckdb")
    assert load_results().path == clean_env / "repo" / "results" / "reproduce.duckdb"


def test_load_results_without_any_store_says_where_it_looked(clean_env):
    with pytest.raises(FileNotFoundError, match="no store found"):
        load_results()


# -- refbench plot ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("kl",),  # the reproduction's runs
        ("tau", "--runs", "refdpo-tau4,refdpo,refdpo-tau16"),
        ("divergence-by-timestep", "--runs", "ref-explore,refdpo"),  # the first run is the 100%
        ("samples", "--runs", "base,diff-dpo,refdpo", "--num", "2"),
    ],
    ids=lambda args: args[0],
)
def test_plot_figures(synthetic_store, tmp_path, monkeypatch, capsys, args):
    out = tmp_path / "figure.png"
    code, stdout, stderr = refbench(monkeypatch, capsys, "plot", *args, "--db", synthetic_store, "--out", out)
    assert code == 0, stderr
    assert stdout.strip() == f"figure: {out}"
    assert_png(out)


@pytest.mark.parametrize("kind, rows", [("table3", plan.TABLE3), ("table4", plan.TABLE4)])
def test_plot_table_prints_markdown(synthetic_store, monkeypatch, capsys, kind, rows):
    code, stdout, _ = refbench(monkeypatch, capsys, "plot", kind, "--db", synthetic_store)
    assert code == 0
    assert stdout == tables.to_markdown(tables.raw_score_table(synthetic_store, rows)) + "\n"
    assert stdout.startswith("| model | run | human | colour | count | shape | aesthetic |")
    assert "| Ours | refdpo | **0.700** [" in stdout or "| gamma = 0.9 + Scale (Ours) | refdpo | **0.700** [" in stdout


def test_plot_table1_prints_win_rates(synthetic_store, monkeypatch, capsys):
    code, stdout, _ = refbench(monkeypatch, capsys, "plot", "table1", "--db", synthetic_store)
    assert code == 0
    assert "| refdpo vs. Diff-DPO | 100.0 [100.0, 100.0] |" in stdout


def test_plot_table1_runs_are_the_run_then_its_baselines(synthetic_store, monkeypatch, capsys):
    """--runs diff-dpo,refdpo: one row, diff-dpo against refdpo (the mirror of refdpo vs. Diff-DPO's
    100%), never a run against itself; a single run is refused in one line."""
    code, stdout, _ = refbench(
        monkeypatch, capsys, "plot", "table1", "--runs", "diff-dpo,refdpo", "--db", synthetic_store
    )
    assert code == 0
    rows = [line for line in stdout.splitlines() if line.startswith("| diff-dpo") or line.startswith("| refdpo")]
    assert len(rows) == 1 and rows[0].startswith("| diff-dpo vs. refdpo | 0.0 [0.0, 0.0] |")
    code, _, stderr = refbench(monkeypatch, capsys, "plot", "table1", "--runs", "refdpo", "--db", synthetic_store)
    assert code == 2 and stderr.startswith("error: plot table1 --runs takes the run first, then at least one baseline")


def test_figures_go_beside_the_store_never_into_results(synthetic_store, tmp_path, monkeypatch, capsys):
    """Without --out: beside the store given by --db (FOLDER/figures/), and for the reproduction's
    store under runs/figures/ of the folder the command runs in; nothing under results/."""
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(synthetic_store, folder / "store.duckdb")
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = refbench(
        monkeypatch, capsys, "plot", "kl", "--runs", "refdpo", "--db", folder / "store.duckdb"
    )
    assert code == 0, stderr
    assert_png(folder / "figures" / "kl.png")
    monkeypatch.setenv("REFBENCH_DB", str(folder / "store.duckdb"))  # load_results' store, as the reproduction's
    code, stdout, stderr = refbench(monkeypatch, capsys, "plot", "kl")
    assert code == 0, stderr
    assert stdout.strip() == "figure: runs/figures/kl.png"
    assert_png(tmp_path / "runs" / "figures" / "kl.png")
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (("plot", "bogus"), "error: unknown plot 'bogus'; valid: kl, divergence-vs-score"),
        (("plot", "kl", "--runs", "nobody"), "error: nothing to plot: no train_metrics in the store"),
        (("plot", "table3", "--runs", "nobody"), "error: no data for table3 in"),
    ],
)
def test_plot_errors_are_one_line(synthetic_store, tmp_path, monkeypatch, capsys, args, message):
    code, stdout, stderr = refbench(monkeypatch, capsys, *args, "--db", synthetic_store, "--out", tmp_path / "x.png")
    assert code == 2
    assert stderr.startswith(message) and len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert not (tmp_path / "x.png").exists()


def test_flow_report_and_the_verdicts_side_by_side(synthetic_store, tmp_path):
    """The flow world's report keeps the claims of its plan (Table 1, Fig. 1(b), 2, 4) that it
    measured; the UNet world's early-regime README (whose settings the flow world shares) gets both
    worlds' verdicts between markers, which the UNet report keeps when it is rewritten, and which a
    second flow report replaces rather than repeats."""
    from analysis import flow_report

    results = tmp_path / "results"
    unet = results / "early-regime"
    write_report(synthetic_store, unet)
    assert flow_report.BEGIN not in (unet / "README.md").read_text()  # no flow world yet
    write_report(synthetic_store, results / "toy-flow", world="toy-flow")
    flow_claims = pd.read_csv(results / "toy-flow" / "claims.csv")
    assert set(flow_claims["where"]) == {"Table 1", "Fig. 1(b)", "Fig. 2", "Fig. 4"}
    assert "not measured" not in set(flow_claims["verdict"])
    flow_readme = (results / "toy-flow" / "README.md").read_text()
    assert "table3" not in " ".join(p.name for p in (results / "toy-flow").iterdir())
    assert "s 0." not in flow_readme  # the synthetic store's runs are DDPM: intervals stay in t
    assert "lambda(t) = 1 + norm(1/sqrt(SNR)) has a mean of" in flow_readme  # next to every refdpo claim
    readme = (unet / "README.md").read_text()
    assert readme.count(flow_report.BEGIN) == 1 and flow_report.QUESTION in readme
    section = readme.split(flow_report.BEGIN)[1]
    assert section.count("| Fig. 4 |") == 2 and "**holds**" in section  # both Fig. 4 claims, both worlds' verdicts
    write_report(synthetic_store, results / "toy-flow", world="toy-flow")
    write_report(synthetic_store, unet)
    assert (unet / "README.md").read_text().count(flow_report.BEGIN) == 1


def test_a_paper_regime_report_shows_both_regimes_verdicts(store_copy, tmp_path):
    """A store whose runs include the paper regime's tau sweep (refdpo-noreg-tau2) is read as the
    paper regime: its README describes that regime and lists each claim's verdict beside the early
    regime's from early-regime/claims.csv; claims.csv carries verdict_early_regime. The early file
    says 'contradicted' for the first claim (which holds here) and 'holds' for the second, which is
    passed as untestable here: both differ, and so does every claim the early file lacks ('not
    run'), so all n of n differ."""
    from analysis.claims import store_regime

    with store_copy.connect() as con:
        con.execute("UPDATE runs SET name = 'refdpo-noreg-tau2' WHERE name = 'refdpo-noreg-tau4'")
    assert store_regime(store_copy) == "paper"
    papers = [(c.where, c.paper) for c in check_claims(store_copy)[:2]]
    results = tmp_path / "results"
    (results / "early-regime").mkdir(parents=True)
    pd.DataFrame(
        [{"where": w, "paper": p, "verdict": v} for (w, p), v in zip(papers, ("contradicted", "holds"))]
    ).to_csv(results / "early-regime" / "claims.csv", index=False)
    write_report(store_copy, results, untestable=[(papers[1][0], papers[1][1][:20])])
    readme = (results / "README.md").read_text()
    assert "the paper's regime" in readme and "## Verdicts in both regimes" in readme
    claims = pd.read_csv(results / "claims.csv")
    assert claims.loc[0, "verdict"] == "holds" and claims.loc[0, "verdict_early_regime"] == "contradicted"
    assert claims.loc[1, "verdict"] == "untestable in this world" and claims.loc[1, "verdict_early_regime"] == "holds"
    assert f"{len(claims)} of {len(claims)} verdicts differ" in readme
