"""ruff, configured in pyproject.toml ([tool.ruff]): the lint rules pass and every file is formatted.

Run `ruff check --fix . && ruff format .` (the venv has the pinned ruff) to make these pass.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff_check_passes():
    result = ruff("check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_every_file_is_ruff_formatted():
    result = ruff("format", "--no-cache", "--check", ".")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_the_lint_test_can_fail(tmp_path):
    """The same ruff configuration finds an unused import and an unformatted line in a file made so."""
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (tmp_path / "bad.py").write_text("import os\nx = {  'a':1}\n")
    check = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "bad.py"], cwd=tmp_path, capture_output=True, text=True
    )
    assert check.returncode == 1 and "F401" in check.stdout
    formatted = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--no-cache", "--check", "bad.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert formatted.returncode == 1
