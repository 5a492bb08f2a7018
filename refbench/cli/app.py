"""The `refbench` command line. It parses and calls; the work happens in the library.

This module assembles the app from the command groups (one module per stage of the
package: store, train, evaluate, experiments, analysis, toy, data); the groups never import it.
Heavy imports (torch, diffusers, duckdb, pandas) happen inside the commands, so that
`refbench --help` answers at once. Errors meant for the user are one line, no traceback.
"""

from __future__ import annotations

import sys

import typer

from .. import __version__
from ..errors import RefbenchError, RunInterrupted
from . import analysis, data, evaluate, experiments, store, toy, train

app = typer.Typer(
    name="refbench",
    help="Train, evaluate and explain preference optimization of text-to-image diffusion models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"refbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    pass


# Registration order is the order `refbench --help` lists them in.
app.command("runs")(store.runs)
app.command("query")(store.query)
app.command("config")(train.config)
app.command("train")(train.train)
app.command("cache-latents")(train.cache_latents)
app.command("generate")(evaluate.generate)
app.command("score")(evaluate.score)
app.command("winrate")(evaluate.winrate)
app.command("make-pairs")(evaluate.make_pairs)
app.command("doctor")(evaluate.doctor)
app.add_typer(toy.toy_app, name="toy")
app.add_typer(data.data_app, name="data")
app.command("timestep-analysis")(experiments.timestep_analysis)
app.command("sweep")(experiments.sweep)
app.command("plot")(analysis.plot)
app.command("reproduce")(experiments.reproduce)
app.command("report")(experiments.report)
app.command("calibrate")(experiments.calibrate)
app.command("bench")(experiments.bench_command)


def main() -> None:
    try:
        app()
    except RunInterrupted as exc:  # asked for, not an error: a plain line and the shell's Ctrl-C code
        typer.echo(str(exc), err=True)
        sys.exit(130)
    except RefbenchError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
