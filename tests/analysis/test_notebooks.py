"""The notebooks of notebooks/: built by notebooks/build_notebooks.py, committed with the outputs of
the committed results, and each runs without a cell error against the synthetic store (nbclient).

One python3 kernel serves the module (starting one per notebook costs seconds): each notebook
starts with `%reset -f` and the build's prelude, so it cannot lean on names another notebook
defined; imported modules stay cached, which is what makes sharing the kernel cheap. The kernel
runs in a temporary folder with REFBENCH_DB pointing at the synthetic store; the notebooks are
executed in memory, never written back.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every notebook runs in a kernel

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

FOLDER = Path(__file__).resolve().parents[2] / "notebooks"
RESULTS = FOLDER.parent / "results"
NOTEBOOKS = sorted(FOLDER.glob("*.ipynb"))
EXPECTED = {
    "fig1b_kl",
    "fig1c_divergence_vs_score",
    "fig2_timestep",
    "fig4_tau",
    "fig5_divergence_by_timestep",
    "table1_winrates",
    "table3_exploration",
    "table4_timestep_aware",
    "claims",
    "fig3_samples",
    "rectified_flow",
}
REBUILD = "run python notebooks/build_notebooks.py"


def _build_script():
    spec = importlib.util.spec_from_file_location("build_notebooks", FOLDER / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _without_outputs(notebook):
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return notebook


def _shown(cell, kind: str) -> list:
    return [output.data[kind] for output in cell.outputs if kind in output.get("data", {})]


def test_one_notebook_per_figure_and_table_and_they_are_built_by_the_script(tmp_path):
    assert {path.stem for path in NOTEBOOKS} == EXPECTED
    for path in _build_script().write(tmp_path):  # cells and metadata as the script writes them, outputs aside
        committed = _without_outputs(nbformat.read(FOLDER / path.name, as_version=4))
        assert committed == nbformat.read(path, as_version=4), f"{path.name}: {REBUILD}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_committed_notebooks_show_their_outputs(path):
    """Executed by the build: every cell after the setup shows something, each figure cell one PNG,
    no error or warning; counts 1, 2, ... and no timings (what keeps rebuilds byte-identical)."""
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), f"{path.name}: {REBUILD}"
    assert not code[0].outputs, "the setup cell shows nothing"
    for cell in code[1:]:
        assert cell.outputs, f"{path.name}, {cell.id}: no output ({REBUILD})"
        assert not [o for o in cell.outputs if o.output_type == "error" or o.get("name") == "stderr"], cell.id
        if "figure = " in cell.source:
            assert len(_shown(cell, "image/png")) == 1, f"{path.name}, {cell.id}: one figure, as a PNG"
    assert not any("execution" in cell.metadata for cell in notebook.cells)
    assert path.stat().st_size < 1_000_000, "figures too large: lower build_notebooks.DPI"


def test_committed_outputs_are_the_committed_results():
    """Stale outputs fail here: the tables and the claims the notebooks show are results/'s."""
    import pandas as pd

    def last_markdown(name: str) -> str:
        cell = [c for c in nbformat.read(FOLDER / f"{name}.ipynb", as_version=4).cells if c.cell_type == "code"][-1]
        return _shown(cell, "text/markdown")[0].strip()

    for notebook, table in [
        ("table1_winrates", "table1.md"),
        ("table3_exploration", "table3.md"),
        ("table4_timestep_aware", "table4.md"),
        ("fig2_timestep", "timestep_analysis.md"),
    ]:
        assert last_markdown(notebook) == (RESULTS / table).read_text().strip(), f"{notebook}: {REBUILD}"
    verdicts = pd.read_csv(RESULTS / "claims.csv")["verdict"]
    rows = last_markdown("claims").splitlines()[2:]  # after the header and its rule
    assert all(f"| {verdict} |" in row for verdict, row in zip(verdicts, rows, strict=True)), f"claims: {REBUILD}"


@pytest.fixture(scope="module")
def kernel(synthetic_store, tmp_path_factory):
    """A NotebookClient whose kernel stays up between notebooks; its notebook is swapped per test."""
    from jupyter_client.kernelspec import KernelSpecManager

    if "python3" not in KernelSpecManager().find_kernel_specs():
        pytest.skip("no python3 kernelspec (python -m ipykernel install --sys-prefix)")
    env = {**os.environ, "REFBENCH_DB": str(synthetic_store), "HF_HUB_OFFLINE": "1"}
    env.pop("MPLBACKEND", None)  # the kernel chooses its own (inline), as in Jupyter
    cwd = tmp_path_factory.mktemp("notebook-cwd")
    client = nbclient.NotebookClient(
        nbformat.v4.new_notebook(), kernel_name="python3", timeout=120, resources={"metadata": {"path": str(cwd)}}
    )
    client.execute(cleanup_kc=False, env=env)  # starts the kernel (an empty notebook)
    yield client
    if client.km is not None:
        client._cleanup_kernel()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs(kernel, path):
    notebook = _without_outputs(nbformat.read(path, as_version=4))  # in memory only: the file is not written
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# ")
    assert "store = load_results(" in code[0].source
    notebook.cells.insert(0, nbformat.v4.new_code_cell("%reset -f\n" + _build_script().PRELUDE))
    kernel.nb = notebook
    kernel.execute(cleanup_kc=False)  # raises CellExecutionError on a cell error
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    shown = [kind for output in outputs for kind in output.get("data", {})]
    if path.stem.startswith("fig"):
        assert shown.count("image/png") == sum(cell.source.count("figure = ") for cell in code), "each figure once"
    else:
        assert "text/markdown" in shown
    if path.stem == "claims":
        markdown = next(o.data["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {}))
        assert "| Fig. 5 |" in markdown and "holds" in markdown
