"""Write the notebooks of this folder, one per figure or table of the paper, and execute them
(run: python notebooks/build_notebooks.py; --sources-only writes them without running them).

Every notebook only calls `analysis` functions and names from `refbench.experiments.reproduce_plan`,
on the store `analysis.load_results(regime=REGIME)` finds: $REFBENCH_DB, else the regime's
reproduce.duckdb, else its parquet export data/ (what `refbench reproduce` writes and commits):
results/ for the paper regime, results/early-regime/ for the early one.

The notebooks are committed executed, so that a code host shows their figures and tables. The
outputs are computed here as in a fresh clone: each notebook runs in a kernel of its own, in
notebooks/, on this checkout's code, with $REFBENCH_DB unset and $REFBENCH_RESULTS pointing at a
view of results/ without its git-ignored stores (*.duckdb), so the committed parquet export is what
they read. Rebuilding gives identical files (on the same library versions): no timings are
recorded, execution counts run 1, 2, ... per notebook, the notebook metadata is this script's,
figures are PNGs at a fixed dpi without matplotlib's version in them, and `analysis.reads` returns
rows in a fixed order with means summed in a fixed order (DuckDB's parallel GROUP BY does not).
Edit this script, not the .ipynb files.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# The regime whose committed results the notebooks show (the paper regime's reproduction is in results/;
# "early" shows results/early-regime/).
REGIME = "paper"
STORE = (
    "The numbers come from `load_results()`: `$REFBENCH_DB` if set, else the regime's `reproduce.duckdb`, "
    "else its committed parquet export (`results/data/`, or `results/early-regime/data/` for the early "
    "regime; run `refbench reproduce` to regenerate them). The outputs saved in this notebook were "
    "computed from the committed export by `python notebooks/build_notebooks.py`."
)

SETUP = """%matplotlib inline
# analysis.figures selects matplotlib's Agg backend (files only); the line above shows figures here.
import matplotlib.pyplot as plt
from IPython.display import Markdown

from analysis import load_results, figures, tables
from analysis.claims import store_regime
from refbench.experiments import reproduce_plan as plan

store = load_results(regime=REGIME)
regime = store_regime(store)  # the plan's names differ in Fig. 4's tau sweep""".replace("REGIME", repr(REGIME))

DPI = 100  # the figures' resolution in the saved notebooks (matplotlib's default, whatever matplotlibrc says)
TIMEOUT = 600  # seconds a cell may run when the notebooks are executed
# Run before a notebook's first cell when it is executed, then dropped from it: the same figures on
# every machine (matplotlib's defaults, a fixed dpi), and PNGs without the "Software: Matplotlib
# version ..." text chunk, so rebuilding gives identical bytes.
PRELUDE = f"""import matplotlib
from matplotlib_inline.backend_inline import InlineBackend

matplotlib.rcdefaults()
matplotlib.rcParams["figure.dpi"] = {DPI}
inline = InlineBackend.instance(parent=get_ipython())  # what `%matplotlib inline` will use
inline.figure_formats = {{"png"}}
inline.print_figure_kwargs = {{"bbox_inches": "tight", "metadata": {{"Software": None}}}}
del matplotlib, InlineBackend, inline"""


def figure(call: str) -> str:
    """A cell drawing one figure and showing it exactly once, whichever backend is active."""
    return f"figure = {call}\nplt.close(figure)  # displayed once, as the cell's value\nfigure"


# file name -> (markdown introduction, code cells after the setup cell)
NOTEBOOKS: dict[str, tuple[str, list[str]]] = {
    "fig1b_kl.ipynb": (
        """# Fig. 1(b): reward margin and divergence from the initial model

The paper's Fig. 1(b): the implicit reward margin (left) and the divergence from the initial
model (right, dotted) over training, for Diffusion-DPO (`diff-dpo`, fixed reference), reference
updates without regularisation (`ref-noreg`) and the method (`refdpo`).

What to look for: Diffusion-DPO stays close to the initial model and its margin flattens;
without regularisation the reference keeps drifting away (and the margin keeps growing); with
regularisation the reference's divergence stops near delta when the reference freezes. Lines
are means over training seeds; the bands run from the lowest to the highest seed.""",
        [figure("figures.plot_kl(store, plan.FIG1B)")],
    ),
    "fig1c_divergence_vs_score.ipynb": (
        """# Fig. 1(c): divergence against preference score

The paper's Fig. 1(c): each run's final divergence D(policy, init) against its mean `human`
oracle score on toy-test (the toy's PickScore), with a quadratic trend.

What to look for: the score rises with divergence and then falls, so the best run sits at a
moderate divergence, not at the largest.""",
        [figure("figures.plot_divergence_vs_score(store, plan.plan_names(regime))")],
    ),
    "fig2_timestep.ipynb": (
        """# Fig. 2: the implicit reward per timestep interval

The paper's Fig. 2: per interval of [0, T) (the noisiest, start of generation, on the left) the
model's denoising loss, the scale of the implicit reward |r_t|, the preference accuracy
r_t(w) > r_t(l) and the reward scale lambda(t), measured against each run's reference.

What to look for: at the noisy end the implicit reward is smaller and its accuracy nearer 50%
(a weaker training signal), which lambda(t) compensates for. Curves are means over training
seeds; the accuracy's band is its 95% Wilson interval over the pairs of every seed.""",
        [
            figure("figures.plot_timestep(store, plan.TIMESTEP_RUNS)"),
            "from analysis import report\n\n# the figure's numbers (results/timestep_analysis.md), means over seeds\n"
            "Markdown(report.timestep_markdown(store, plan.TIMESTEP_RUNS))",
        ],
    ),
    "fig3_samples.ipynb": (
        """# Fig. 3: the same prompt and seed under every method

The paper's Fig. 3: one row per (prompt, evaluation seed), one column per method (the initial
model, Diffusion-DPO, DSPO, Diffusion-KTO and the method), each image made from the same initial
noise, so the columns differ only by the model. The runs are each method's training seed 0;
`refbench plot samples --runs ... --training-seed K` draws another seed's.

What to look for: at toy scale the differences are small and local (colour, count, shape of the
drawn objects); read them beside Table 1's win rates rather than as a verdict of their own.""",
        [figure("figures.plot_samples(store, plan.FIG3, num=6)")],
    ),
    "fig4_tau.ipynb": (
        """# Fig. 4: sensitivity to the reference update period tau

The paper's Fig. 4: mean `human` score against tau, with and without regularisation, beside
Diffusion-DPO (dashed, its interval shaded); points are means over training seeds with their
95% interval over seeds and samples. The paper's tau {16, 32, 64} is scaled to {4, 8, 16} for the toy's
300-step budget.

What to look for: without regularisation a shorter tau (more drift) scores lower; with
regularisation every tau beats Diffusion-DPO.""",
        [
            figure(
                "figures.plot_tau(store, {k: v for k, v in plan.fig4(regime).items() if k != 'baseline'}, "
                "baseline=plan.fig4(regime)['baseline'])"
            )
        ],
    ),
    "fig5_divergence_by_timestep.ipynb": (
        """# Fig. 5: divergence per timestep interval

The paper's Fig. 5: the divergence from the initial model in each timestep interval, as a
percentage of the exploration-only run's (`ref-explore` = 100%), with and without the reward
scale lambda(t).

What to look for: with the reward scale the model spends less divergence at the noisy,
early timesteps (left) than without it.""",
        [
            figure(
                "figures.plot_divergence_by_timestep(store, plan.FIG5['runs'], relative_to=plan.FIG5['relative_to'])"
            ),
            "# the figure's numbers: % of relative_to's divergence per interval, mean over training seeds\n"
            "figures.divergence_by_timestep(store, plan.FIG5['runs'], relative_to=plan.FIG5['relative_to']).round(1)",
        ],
    ),
    "table1_winrates.ipynb": (
        """# Table 1: win rates against the baselines

The paper's Table 1: the win rate of the method (`refdpo`) against each baseline under each
reward model (here the toy's five oracle metrics), in %, with a 95% interval over training
seeds and paired samples (hierarchical bootstrap); ties count half. The last column is what the
baseline costs per step, in image-passes (forward + backward).

What to look for: rates above 50% whose interval lies above 50% as well, against every
baseline and under most metrics.""",
        ["Markdown(tables.to_markdown(tables.winrate_table(store, plan.TABLE1_RUN, plan.TABLE1)))"],
    ),
    "table3_exploration.ipynb": (
        """# Table 3: other ways to explore

The paper's Table 3: mean oracle scores of Diffusion-DPO with a 5x learning rate, with
beta = 1000, with a re-initialised reference, and of the method; the best value of each
metric in bold.

What to look for: the larger learning rate degrades Diffusion-DPO, beta = 1000 and
re-initialisation do not reach the method's scores.""",
        ["Markdown(tables.to_markdown(tables.raw_score_table(store, plan.TABLE3)))"],
    ),
    "table4_timestep_aware.ipynb": (
        """# Table 4: timestep-aware training

The paper's Table 4: mean oracle scores of Diffusion-DPO, timestep-aware training alone,
exploration alone, and their combinations with gamma 0.8 / 0.9 with and without the reward
scale lambda(t); the best value of each metric in bold.

What to look for: timestep-aware training alone does not help, exploration alone does, the
two together help most, and lambda(t) improves both gamma settings.""",
        ["Markdown(tables.to_markdown(tables.raw_score_table(store, plan.TABLE4)))"],
    ),
    "claims.ipynb": (
        """# The paper's claims, one by one

Every claim of the paper that the toy world can test: one effect, signed so that the paper's
claim is positive, its 95% interval over training seeds (and paired samples where there are
any), and a verdict after Holm's adjustment over every test: "holds" (the interval excludes no
effect, in the paper's direction), "contradicted" (it excludes no effect, in the other
direction), "inconclusive", "untestable in this world" (a claim about over-optimisation, in a
world whose Diffusion-DPO curve did not show it: measured, judged by no test; `docs/regime.md`),
or "not measured" when a run it needs is missing; computed by `analysis.claims` from the same
store as the figures and tables, with what the methods compared cost, as in `results/claims.csv`.

What to look for: which claims survive a new training seed, and which are inconclusive.""",
        [
            "from analysis import claims\nfrom refbench.experiments.regime_plan import untestable_claims\n\n"
            "table = claims.claims_table(store, untestable=untestable_claims() if regime == 'paper' else ())\n"
            "print(claims.verdict_counts(table))\n"
            "Markdown(tables.to_markdown(table[['where', 'paper', 'measured', 'seeds', 'samples', 'verdict', 'cost']]))"
        ],
    ),
    "rectified_flow.ipynb": (
        """# Do the paper's findings hold for rectified flow?

The flow-matching toy world (`refbench reproduce --world toy-flow`, results in `results/toy-flow/`):
the same prompts, pairs and oracles as the UNet world, with a 16 px SD3 transformer trained by
rectified flow as the base model, and the paper's method translated as the project's
docs/flow.md states. Its plan trains the runs of Table 1 (refdpo against Diff-DPO), Fig. 1(b),
Fig. 2 and Fig. 4, under the same training seeds as the UNet world.

What to look for: whether the reference moves and freezes as in the UNet world (Fig. 1(b)),
whether the implicit reward is weaker at the noisy start (Fig. 2, intervals of the noise level s),
whether tau behaves as in Fig. 4, and, in the last cell, each claim's verdict in both worlds.""",
        [
            'flow_store = load_results(world="toy-flow")\n' + figure("figures.plot_kl(flow_store, plan.FIG1B)"),
            figure("figures.plot_timestep(flow_store, [run for run in plan.TIMESTEP_RUNS if run in plan.FLOW_RUNS])"),
            figure(
                "figures.plot_tau(flow_store, {k: v for k, v in plan.FIG4.items() if k != 'baseline'}, "
                "baseline=plan.FIG4['baseline'])"
            ),
            "from analysis import flow_report, reads\n\n"
            "Markdown(flow_report.comparison_section(reads.results_folder(regime='early'), reads.results_folder('toy-flow')) "
            "or 'run `refbench reproduce --world toy-flow` first')",
        ],
    ),
}


def build(name: str) -> nbformat.NotebookNode:
    introduction, cells = NOTEBOOKS[name]
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    notebook.cells = [
        nbformat.v4.new_markdown_cell(introduction + "\n\n" + STORE),
        nbformat.v4.new_code_cell(SETUP),
        *[nbformat.v4.new_code_cell(code) for code in cells],
    ]
    for index, cell in enumerate(notebook.cells):  # stable ids: rebuilding gives identical files
        cell["id"] = f"cell-{index}"
    return notebook


def write(folder: Path = HERE) -> list[Path]:
    """The notebooks' sources, without outputs."""
    written = []
    for name in NOTEBOOKS:
        path = folder / name
        nbformat.write(build(name), path)
        written.append(path)
    return written


def committed_results(view: Path, results: Path = ROOT / "results") -> Path:
    """``view``: results/ as a clone has it, links to everything but the stores git ignores
    (reproduce.duckdb and its .wal, whichever subfolder), so that `load_results` reads the
    committed parquet export and not a store this machine made."""
    view.mkdir(parents=True)
    for entry in sorted(results.iterdir()):
        if ".duckdb" in entry.name:
            continue
        if entry.is_dir() and any(".duckdb" in found.name for found in entry.rglob("*")):
            committed_results(view / entry.name, entry)
        else:
            (view / entry.name).symlink_to(entry)
    return view


def kernel_env(results: Path, temporary: Path | None = None) -> dict[str, str]:
    """The notebooks' kernel environment: this checkout's code first on the path, the view of
    the committed results, no $REFBENCH_DB, no matplotlib backend, no downloads; ``temporary``:
    the kernels' temporary folder (`load_results` copies the export into a DuckDB file there)."""
    env = {key: value for key, value in os.environ.items() if key not in ("REFBENCH_DB", "MPLBACKEND")}
    if temporary is not None:
        temporary.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(temporary)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["REFBENCH_RESULTS"] = str(results)
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONHASHSEED"] = "0"
    return env


def tidy(executed: nbformat.NotebookNode, source: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """What makes a rebuild byte-identical: the source's metadata (not the kernel's version
    details), no timings, execution counts 1, 2, ... in cell order."""
    executed.metadata = source.metadata
    count = 0
    for cell in executed.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            count += 1
            cell.execution_count = count
            for output in cell.outputs:
                if "execution_count" in output:
                    output.execution_count = count
    return executed


def execute(path: Path, env: dict[str, str], timeout: int = TIMEOUT) -> nbformat.NotebookNode:
    """Run the notebook at ``path`` in a fresh python3 kernel whose working directory is its folder
    and write it back with its outputs; a cell error raises (nbclient's CellExecutionError)."""
    import nbclient

    source = nbformat.read(path, as_version=4)
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_code_cell(PRELUDE, id="prelude"))
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=timeout,
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute(env=env)
    notebook.cells.pop(0)
    text = nbformat.writes(notebook)
    for local in filter(None, (str(ROOT), env["REFBENCH_RESULTS"], env.get("TMPDIR"), tempfile.gettempdir())):
        if local in text:  # a path of this machine in an output (a warning, a file name): not for the repository
            raise RuntimeError(f"{path.name}: an output shows {local}; make the cell print something else")
    nbformat.write(tidy(notebook, source), path)
    return notebook


def main(folder: Path = HERE, run: bool = True) -> list[Path]:
    written = write(folder)
    if not run:
        return written
    if (folder / "runs").exists():
        raise SystemExit(f"{folder / 'runs'} exists: the notebooks would read samples from it (move it away)")
    with tempfile.TemporaryDirectory(prefix="refbench-notebooks-") as temporary:
        env = kernel_env(committed_results(Path(temporary) / "results"), Path(temporary) / "tmp")
        for path in written:
            print(f"executing {path.name}", flush=True)
            execute(path, env)
    return written


if __name__ == "__main__":
    for path in main(run="--sources-only" not in sys.argv[1:]):
        print(path)
