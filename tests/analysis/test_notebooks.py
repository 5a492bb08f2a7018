"""Every notebook of notebooks/ runs without a cell error against the synthetic store (nbclient).

One python3 kernel serves the module (starting one per notebook costs seconds): each notebook
starts with `%reset -f`, so it cannot lean on names another notebook defined; imported modules
stay cached, which is what makes sharing the kernel cheap. The kernel runs in a temporary
folder with REFBENCH_DB pointing at the synthetic store.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every notebook runs in a kernel of its own

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

FOLDER = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(FOLDER.glob("*.ipynb"))
EXPECTED = {"fig1b_kl", "fig1c_divergence_vs_score", "fig2_timestep", "fig4_tau", "fig5_divergence_by_timestep",
            "table1_winrates", "table3_exploration", "table4_timestep_aware", "claims", "fig3_samples", "rectified_flow"}


def test_one_notebook_per_figure_and_table_and_they_are_built_by_the_script(tmp_path):
    import importlib.util

    assert {path.stem for path in NOTEBOOKS} == EXPECTED
    spec = importlib.util.spec_from_file_location("build_notebooks", FOLDER / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rebuilt = module.main(tmp_path)
    for path in rebuilt:  # committed as the script writes them: no outputs, nothing edited by hand
        assert path.read_text() == (FOLDER / path.name).read_text(), f"{path.name}: run notebooks/build_notebooks.py"


@pytest.fixture(scope="module")
def kernel(synthetic_store, tmp_path_factory):
    """A NotebookClient whose kernel stays up between notebooks; its notebook is swapped per test."""
    from jupyter_client.kernelspec import KernelSpecManager

    if "python3" not in KernelSpecManager().find_kernel_specs():
        pytest.skip("no python3 kernelspec (python -m ipykernel install --sys-prefix)")
    env = {**os.environ, "REFBENCH_DB": str(synthetic_store), "HF_HUB_OFFLINE": "1"}
    env.pop("MPLBACKEND", None)  # the kernel chooses its own (inline), as in Jupyter
    cwd = tmp_path_factory.mktemp("notebook-cwd")
    client = nbclient.NotebookClient(nbformat.v4.new_notebook(), kernel_name="python3", timeout=120,
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute(cleanup_kc=False, env=env)  # starts the kernel (an empty notebook)
    yield client
    if client.km is not None:
        client._cleanup_kernel()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs(kernel, path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# ")
    assert not any(cell.outputs or cell.execution_count for cell in code), "commit notebooks without outputs"
    assert "store = load_results(" in code[0].source
    notebook.cells.insert(0, nbformat.v4.new_code_cell("%reset -f"))
    kernel.nb = notebook
    kernel.execute(cleanup_kc=False)  # raises CellExecutionError on a cell error
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    shown = [kind for output in outputs for kind in output.get("data", {})]
    if path.stem.startswith("fig"):
        assert shown.count("image/png") == 1, "each figure is shown exactly once"
    else:
        assert "text/markdown" in shown
    if path.stem == "claims":
        markdown = next(o.data["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {}))
        assert "| Fig. 5 |" in markdown and "holds" in markdown
