"""`refbench ARGS` in the test's own process, through the real entry point (its one-line errors,
its exit codes), without the start-up of a subprocess."""

from __future__ import annotations

import sys


def run_refbench(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr stripped) of `refbench ARGS`."""
    from refbench.cli.app import main

    monkeypatch.setattr(sys, "argv", ["refbench", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()
