"""What the command groups share: the store option and the parsers of list and format flags."""

from __future__ import annotations

import typer

from ..defaults import DEFAULT_DB, DEFAULT_OUT
from ..errors import RefbenchError

DB_HELP = (
    "DuckDB file holding every run and metric. Commands that write create it when missing (and its "
    "folder, saying so); commands that read what others wrote refuse a missing one."
)
DB_OPTION = typer.Option(DEFAULT_DB, "--db", help=DB_HELP)
OUT_OPTION = typer.Option(DEFAULT_OUT, "--out", help="Root folder of run folders.")
FORMATS = ("table", "csv", "json", "markdown")


def parse_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise RefbenchError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    return fmt


def parse_list(text: str | None, kind=str) -> list:
    if not text:
        return []
    try:
        return [kind(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise RefbenchError(f"cannot read {text!r} as a comma-separated list of {kind.__name__}") from None
