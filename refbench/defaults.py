"""Where refbench reads and writes when no flag says otherwise.

Everything a user makes goes under ``runs/`` (git-ignored): run folders, the store and figures.
The repository's tracked ``results/`` holds only the committed reproduction, and is written by
``refbench reproduce`` alone (or when a --db / --out points there). No heavy imports: the CLI
reads these for its help texts.
"""

from pathlib import Path

DEFAULT_OUT = Path("runs")  # run folders: runs/NAME
DEFAULT_DB = DEFAULT_OUT / "refbench.duckdb"
LEGACY_DB = Path("results") / "refbench.duckdb"  # the default store of refbench before it moved to runs/


def figure_folder(db: Path | None) -> Path:
    """Figures go beside the store they are drawn from; the committed reproduction's go to runs/figures."""
    return Path(db).parent / "figures" if db is not None else DEFAULT_OUT / "figures"
