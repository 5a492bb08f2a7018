"""Commands that read the store: runs, query."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import DB_OPTION, parse_format


def runs(
    db: Path = DB_OPTION, fmt: str = typer.Option("table", "--format", help="table, csv, json or markdown.")
) -> None:
    """List the runs in the store, with status and progress."""
    from ..display import render_frame
    from ..training.run_folder import runs_table

    fmt = parse_format(fmt)
    frame, hints = runs_table(db)
    if frame.empty and fmt == "table":
        typer.echo(f"no runs yet in {db}")
        return
    typer.echo(render_frame(frame, fmt, title=f"runs in {db}"))
    for hint in hints if fmt == "table" else []:
        typer.echo(hint, err=True)


def query(
    sql: str = typer.Argument(..., help="SQL to run, e.g. \"select * from train_metrics where run = 'refdpo'\"."),
    db: Path = DB_OPTION,
    fmt: str = typer.Option("table", "--format", help="table, csv, json or markdown."),
) -> None:
    """Run SQL that reads the store and print the result. It can only read: writes, COPY ... TO,
    ATTACH, INSTALL / LOAD and settings are refused."""
    from ..display import render_frame
    from ..store import Store

    fmt = parse_format(fmt)
    frame = Store(db, create=False).user_query(sql)
    typer.echo("(no rows)" if frame is None else render_frame(frame, fmt))
