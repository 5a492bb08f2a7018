"""`refbench report`: a reproduction's results rewritten from its stored runs, without training."""

import shutil

from cli_helpers import run_refbench as refbench


def test_report_rewrites_the_results_from_the_store_without_its_data(synthetic_store, tmp_path, monkeypatch, capsys):
    """Tables, claims and a README that says it was re-analysed, and no new parquet export (the data
    did not change); an unknown world is one line."""
    db = tmp_path / "store.duckdb"
    shutil.copy(synthetic_store, db)
    results = tmp_path / "again"
    code, out, _ = refbench(monkeypatch, capsys, "report", "--db", str(db), "--results", str(results))
    assert code == 0 and out.startswith(f"results: {results}/README.md (")
    readme = (results / "README.md").read_text()
    assert readme.startswith("# Toy-world") and "Written by `refbench report` on" in readme
    assert "recomputed from the stored runs" in readme and "after Holm's adjustment" in readme
    assert (results / "claims.csv").is_file() and (results / "table1.md").is_file() and not (results / "data").exists()
    code, _, err = refbench(monkeypatch, capsys, "report", "--world", "mars", "--db", str(db))
    assert (
        code != 0
        and err
        == "error: --world must be one of toy, toy-flow and --regime one of paper, early; got 'mars' and 'paper'"
    )
