"""The DuckDB store: the one module that talks to DuckDB.

Every command opens the database for the moment it needs it and closes it again, so
several refbench processes can share one file: DuckDB lets one process write at a time,
and a process that finds the file locked retries for ``lock_timeout`` seconds before it
gives up with one sentence (``StoreError``). Writers send rows in batches, each batch
one transaction, so a killed run keeps every batch it committed.

Runs are addressed by name; every other table refers to a run by that name (``run``).
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from . import schema
from .defaults import DEFAULT_DB, LEGACY_DB
from .errors import StoreError
from .schema import TABLES

__all__ = ["Store", "DEFAULT_DB", "TABLES"]

# `refbench query` runs the user's SQL on a connection that can only read this one file: no file
# access (COPY TO, read_csv, ATTACH), no extensions, and the settings locked so the SQL cannot
# turn them back on.
SANDBOX = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "lock_configuration": True,
}
# Errors that mean the file itself is damaged (truncated, overwritten), not the SQL.
_DAMAGE = (duckdb.IOException, duckdb.SerializationException, duckdb.InternalException, duckdb.FatalException)


def now() -> datetime:
    return datetime.now(UTC)


class Store:
    """A handle on one DuckDB file. Cheap to create; holds no open connection between calls."""

    def __init__(
        self,
        path: str | Path = DEFAULT_DB,
        *,
        lock_timeout: float | None = None,
        create: bool = True,
        announce: bool = False,
    ):
        """``create=False``: a missing file is a StoreError (commands that only read must not make an
        empty store from a mistyped --db). ``announce``: say on stderr when a new store is made
        in a folder that did not exist."""
        self.path = Path(path)
        # How long to wait for another process's write to finish (REFBENCH_LOCK_TIMEOUT, seconds).
        self.lock_timeout = float(os.environ.get("REFBENCH_LOCK_TIMEOUT", 20)) if lock_timeout is None else lock_timeout
        self._held: duckdb.DuckDBPyConnection | None = None  # see held()
        if self.path.exists() and self.path.is_dir():
            raise StoreError(f"{self.path} is a folder, not a database file")
        if not self.path.exists():
            if not create:
                raise StoreError(
                    f"no store at {self.path}; train a run first, or pass --db with an existing store"
                    + _legacy_hint(self.path)
                )
            new_folder = not self.path.parent.exists()
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the folder for the database {self.path}: {exc.strerror}") from None
            if announce and new_folder:  # a --db into a folder that was not there may be a typo: say so
                import sys

                print(
                    f"new store {self.path} in the new folder {self.path.parent}" + _legacy_hint(self.path),
                    file=sys.stderr,
                    flush=True,
                )
        self._ensure_schema()

    # -- connections -------------------------------------------------------------------
    @contextmanager
    def held(self) -> Iterator[Store]:
        """Serve every read inside the block from one read-only connection. An analysis makes hundreds
        of small queries, and opening the file costs more than most of them; while held, other
        processes cannot write to the file, so hold it only around reading."""
        if self._held is not None:
            yield self
            return
        with self.connect(read_only=True) as connection:
            self._held = connection
            try:
                yield self
            finally:
                self._held = None

    @contextmanager
    def connect(self, *, read_only: bool = False, sandboxed: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """An open connection, retried while another process holds the file's lock. ``sandboxed``:
        read-only, with no access to other files or extensions (see SANDBOX)."""
        if self._held is not None:
            if not read_only:
                raise StoreError(f"cannot write to {self.path} while it is held for reading")
            with self._damage_as_one_line():
                yield self._held
            return
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.05
        while True:
            try:
                connection = duckdb.connect(
                    str(self.path), read_only=read_only or sandboxed, config=SANDBOX if sandboxed else {}
                )
                break
            except duckdb.IOException as exc:
                message = str(exc)
                if "lock" not in message.lower():
                    raise StoreError(f"cannot open the database {self.path}: {message.splitlines()[0]}") from None
                if time.monotonic() >= deadline:
                    holder = re.search(r"PID (\d+)", message)
                    who = f" (process {holder.group(1)})" if holder else ""
                    raise StoreError(
                        f"the database {self.path} is locked by another process{who} for more than "
                        f"{self.lock_timeout:.0f} s; wait for it to finish or use --db with another file"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
            except duckdb.Error as exc:
                raise StoreError(f"cannot open the database {self.path}: {str(exc).splitlines()[0]}") from None
        try:
            with self._damage_as_one_line():
                yield connection
        finally:
            connection.close()

    @contextmanager
    def _damage_as_one_line(self) -> Iterator[None]:
        try:
            yield
        except _DAMAGE as exc:
            raise StoreError(
                f"the database {self.path} cannot be read or written ({str(exc).splitlines()[0]}); it may "
                f"be truncated or damaged: restore it from a copy, or use another --db"
            ) from None

    def _ensure_schema(self) -> None:
        # Once per file and process: analyses open a Store per query, and checking every table's
        # columns each time would cost more than the queries.
        key = _file_key(self.path)
        if key is not None and key in _SCHEMA_CHECKED:
            return
        with self.connect() as con:
            self._check_length(con)
            for table, columns in TABLES.items():
                con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
                # A store made by an older refbench gains the columns added since (NULL in old rows).
                have = {row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()}
                for column, kind in schema.column_types(table):
                    if column not in have:
                        con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        key = _file_key(self.path)
        if key is not None:
            _SCHEMA_CHECKED.add(key)

    def _check_length(self, con) -> None:
        """A file too short to hold the blocks its header counts as used was cut short (a full disk,
        a copy that stopped): refuse it now, in one line, rather than at the first read of a lost
        block. Free blocks may lie past the end of a sound file, and blocks replayed from a WAL
        are not in it yet, so only used blocks count, and only without a WAL."""
        if Path(f"{self.path}.wal").exists():
            return
        block_size, used = con.execute("SELECT block_size, used_blocks FROM pragma_database_size()").fetchone()
        have = self.path.stat().st_size
        if have < block_size * used:
            raise StoreError(
                f"the database {self.path} is cut short ({have} bytes, less than the {block_size * used} "
                f"its used blocks need); restore it from a copy, or use another --db"
            )

    # -- generic reads -----------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] | None = None):
        """Run read-only SQL and return a pandas DataFrame; bad SQL is a one-line StoreError."""
        with self.connect(read_only=True) as con:
            try:
                return con.execute(sql, params or []).df()
            except duckdb.Error as exc:
                raise StoreError(f"query failed: {str(exc).splitlines()[0]}") from None

    def user_query(self, sql: str):
        """The user's SQL (``refbench query``), on a connection that can only read this store: writes,
        COPY ... TO, ATTACH, INSTALL / LOAD and changing settings are refused in one line."""
        with self.connect(sandboxed=True) as con:
            try:
                result = con.execute(sql)
                return result.df() if result.description else None
            except (duckdb.PermissionException, duckdb.InvalidInputException, duckdb.CatalogException) as exc:
                first = str(exc).splitlines()[0]
                if isinstance(exc, duckdb.PermissionException) or any(
                    word in first for word in ("read-only", "has been locked", "in-memory")
                ):
                    raise StoreError(f"query refused: `refbench query` only reads {self.path} ({first})") from None
                raise StoreError(f"query failed: {first}") from None
            except duckdb.Error as exc:
                raise StoreError(f"query failed: {str(exc).splitlines()[0]}") from None

    # -- generic writes ----------------------------------------------------------------
    def upsert(self, table: str, rows: Iterable[dict[str, Any]]) -> int:
        """Insert rows (dicts keyed by column), replacing rows with the same key. One transaction."""
        rows = list(rows)
        if not rows:
            return 0
        columns = schema.columns(table)
        unknown = set().union(*rows) - set(columns)
        if unknown:
            raise ValueError(f"unknown columns for {table}: {sorted(unknown)}")
        used = [c for c in columns if any(c in row for row in rows)]
        keys = schema.key_columns(table)
        if keys:  # one statement may not hold a key twice: the last row of a key wins, as row by row
            rows = list({tuple(_to_sql(row.get(k)) for k in keys): row for row in rows}.values())
        values = [[_to_sql(row.get(c)) for c in used] for row in rows]
        names = ", ".join(used)
        batch = _arrow_batch(used, values)
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                if batch is not None:  # one bulk statement: executemany inserts row by row, 3-8 ms each
                    con.register("_refbench_rows", batch)
                    con.execute(f"INSERT OR REPLACE INTO {table} ({names}) SELECT {names} FROM _refbench_rows")
                    con.unregister("_refbench_rows")
                else:
                    placeholders = ", ".join("?" for _ in used)
                    con.executemany(f"INSERT OR REPLACE INTO {table} ({names}) VALUES ({placeholders})", values)
                con.execute("COMMIT")
            except BaseException:
                try:
                    con.execute("ROLLBACK")
                except duckdb.Error:  # a damaged file: the first error is the one to report
                    pass
                raise
        return len(rows)

    def delete_samples(self, run: str, prompt_set: str) -> list[str]:
        """Remove a run's samples on a prompt set and their scores, in one transaction; returns the image paths."""
        with self.connect() as con:
            paths = [
                row[0]
                for row in con.execute(
                    "SELECT image_path FROM samples WHERE run = ? AND prompt_set = ?", [run, prompt_set]
                ).fetchall()
            ]
            con.execute("BEGIN TRANSACTION")
            con.execute(
                "DELETE FROM scores WHERE sample_id IN (SELECT sample_id FROM samples WHERE run = ? AND "
                "prompt_set = ?)",
                [run, prompt_set],
            )
            con.execute("DELETE FROM samples WHERE run = ? AND prompt_set = ?", [run, prompt_set])
            con.execute("COMMIT")
        return paths

    def delete(self, table: str, **where: Any) -> None:
        clause = " AND ".join(f"{key} = ?" for key in where)
        with self.connect() as con:
            con.execute(f"DELETE FROM {table} WHERE {clause}", list(where.values()))

    # -- parquet export / import ---------------------------------------------------------
    def export_parquet(self, folder: str | Path) -> list[Path]:
        """Every table as ``folder/TABLE.parquet`` (git-friendly, readable without refbench)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        with self.connect(read_only=True) as con:
            for table in TABLES:
                path = folder / f"{table}.parquet"
                con.execute(f"COPY (SELECT * FROM {table}) TO '{_quote(path)}' (FORMAT parquet)")
                written.append(path)
        return written

    def import_parquet(self, folder: str | Path) -> int:
        """Load a parquet export into this store (rows with the same key are replaced); returns rows read."""
        folder = Path(folder)
        count = 0
        with self.connect() as con:
            for table in TABLES:
                path = folder / f"{table}.parquet"
                if path.is_file():  # an export from an older refbench may lack newer columns
                    present = {
                        row[0]
                        for row in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{_quote(path)}')").fetchall()
                    }
                    columns = ", ".join(c for c in schema.columns(table) if c in present)
                    con.execute(
                        f"INSERT OR REPLACE INTO {table} ({columns}) SELECT {columns} FROM read_parquet('{_quote(path)}')"
                    )
                    count += con.execute(f"SELECT count(*) FROM read_parquet('{_quote(path)}')").fetchone()[0]
        return count

    # -- runs --------------------------------------------------------------------------
    def create_run(
        self,
        name: str,
        *,
        method: str,
        preset: str,
        config: dict,
        seed: int,
        run_dir: str,
        git_revision: str | None,
        versions: dict[str, str],
    ) -> str:
        run_id = uuid.uuid4().hex
        stamp = now()
        self.upsert(
            "runs",
            [
                {
                    "name": name,
                    "id": run_id,
                    "method": method,
                    "preset": preset,
                    "config": config,
                    "git_revision": git_revision,
                    "versions": versions,
                    "seed": seed,
                    "status": "created",
                    "run_dir": run_dir,
                    "created_at": stamp,
                    "updated_at": stamp,
                    "message": None,
                }
            ],
        )
        return run_id

    def set_run_status(self, name: str, status: str, message: str | None = None) -> None:
        with self.connect() as con:
            con.execute(
                "UPDATE runs SET status = ?, message = ?, updated_at = ? WHERE name = ?", [status, message, now(), name]
            )

    def set_run_config(self, name: str, config: dict) -> None:
        with self.connect() as con:
            con.execute("UPDATE runs SET config = ?, updated_at = ? WHERE name = ?", [_to_sql(config), now(), name])

    def get_run(self, name: str) -> dict[str, Any] | None:
        frame = self.query("SELECT * FROM runs WHERE name = ?", [name])
        if frame.empty:
            return None
        row = frame.iloc[0].to_dict()
        for key in ("config", "versions"):
            if isinstance(row.get(key), str):
                row[key] = json.loads(row[key])
        return row

    def list_runs(self):
        """One row per run with its progress (last logged step) and number of reference events
        (sync, freeze, reinit; the 'nonfinite-*' events of skipped steps are not counted)."""
        return self.query(
            """
            SELECT r.name, r.method, r.preset, r.status, m.last_step AS steps, e.events AS ref_events,
                   r.seed, strftime(r.created_at, '%Y-%m-%d %H:%M') AS created, r.git_revision, r.run_dir
            FROM runs r
            LEFT JOIN (SELECT run, max(step) AS last_step FROM train_metrics GROUP BY run) m ON m.run = r.name
            LEFT JOIN (SELECT run, count(*) AS events FROM ref_events WHERE kind NOT LIKE 'nonfinite%' GROUP BY run) e
                ON e.run = r.name
            ORDER BY r.created_at
            """
        )


_SCHEMA_CHECKED: set[tuple[str, int, int]] = set()


def _legacy_hint(path: Path) -> str:
    """Where an earlier refbench kept the default store, when the default is asked for and it is there."""
    if Path(path) == DEFAULT_DB and LEGACY_DB.is_file():
        return (
            f" (an earlier refbench kept its store at {LEGACY_DB}: pass --db {LEGACY_DB}, or move it to {DEFAULT_DB})"
        )
    return ""


def _file_key(path: Path) -> tuple[str, int, int] | None:
    """(path, inode, size): a file made again at the same path, or cut short, is checked again."""
    try:
        stat = path.stat()
        return str(path.resolve()), stat.st_ino, stat.st_size
    except OSError:
        return None


def _arrow_batch(columns: list[str], values: list[list[Any]]):
    """The rows as a pyarrow table, or None when a column's values have no common arrow type."""
    import pyarrow as pa

    try:
        return pa.table({name: pa.array([row[i] for row in values]) for i, name in enumerate(columns)})
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        return None


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")


def _to_sql(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    return value
