"""The `refbench data` group: the named data sources, and what one of them holds."""

from __future__ import annotations

import typer

data_app = typer.Typer(help="Preference data sources: list the named ones, inspect one.", no_args_is_help=True)


@data_app.command("list")
def data_list() -> None:
    """The named data sources, one a line: NAME  summary  (e.g. NAME:LOCATION)."""
    from ..training.data_sources import REGISTRY

    width = max(len(name) for name in REGISTRY)
    for source in REGISTRY.values():
        typer.echo(f"{source.name:<{width}}  {source.summary}  (e.g. {source.example})")


@data_app.command("inspect")
def data_inspect(
    source: str = typer.Argument(..., help="A data.source value: NAME:LOCATION, a parquet file or folder, a hub id."),
    split: str = typer.Option("train", "--split"),
    column: list[str] = typer.Option(
        [], "--column", help="KEY=COLUMN of data.columns for a parquet of its own (repeat): --column caption=prompt"
    ),
    sample: int = typer.Option(8, "--sample", help="Usable pairs whose image sizes are read."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object instead of lines."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Rows, usable pairs, ties and skips, caption lengths, image sizes of a sample, the schema."""
    import json

    from ..errors import ConfigError
    from ..training.data_sources.inspect import inspect_source

    columns = {}
    for item in column:
        key, equals, value = item.partition("=")
        if not equals or not key or not value:
            raise ConfigError(f"--column {item!r}: expected KEY=COLUMN (e.g. --column caption=prompt)")
        columns[key.strip()] = value.strip()
    report = inspect_source(source, split, columns or None, sample=sample, progress=progress)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
        typer.echo(f"{key.replace('_', ' ')}: {value}")
