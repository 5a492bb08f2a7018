"""Where a run lives: its folder under --out, its lock, the command that continues it.

A run is addressed by name in its store. A new run gets ``OUT/NAME``; a resumed one the folder
its store row recorded (an absolute path), so a resume needs only ``--name`` and ``--db``. The
folder holds ``.lock`` while a process trains the run. Every hint refbench prints is built by
``resume_command``, so that, pasted as printed, it continues that run.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from ..defaults import DEFAULT_DB, DEFAULT_OUT
from ..errors import RefbenchError
from ..store import Store

__all__ = ["resume_command", "locate_run", "refuse_overwrite", "run_lock", "lock_is_free", "runs_table"]


def resume_command(name: str, db: Path, run_dir: Path) -> str:
    """The command that continues a run, pasteable as printed: with --db and --out when they
    are not the defaults."""
    import shlex

    words = ["refbench", "train", "--name", name, "--resume"]
    if Path(db) != DEFAULT_DB:
        words += ["--db", str(db)]
    if Path(run_dir).parent.resolve() != DEFAULT_OUT.resolve():
        words += ["--out", str(Path(run_dir).parent)]
    return " ".join(shlex.quote(word) for word in words)


def locate_run(name: str, *, store: Store, db: Path, out_root: Path | None, resume: bool | None) -> tuple[Path, bool]:
    """(the run's folder, whether it resumes). For --resume the folder the store recorded (a store
    or folder that does not hold the run is one line); for a new run ``OUT/NAME``, which
    ``refuse_overwrite`` checks once its lock is held. ``resume=None``: resume when the store holds
    the run, else start it."""
    existing = store.get_run(name)
    asked = (out_root or DEFAULT_OUT) / name
    if resume is None:
        resume = existing is not None
    if not resume:
        return asked, False
    if existing is None:
        elsewhere = (
            f"; the folder {asked} holds a run of that name: resume it with the --db it was trained with"
            if (asked / "config.json").is_file()
            else ""
        )
        raise RefbenchError(
            f"--resume: the store {db} holds no run named {name!r}{elsewhere}; `refbench runs --db {db}` "
            f"lists its runs (without --resume, a new run starts)"
        )
    run_dir = Path(existing["run_dir"]) if existing.get("run_dir") else asked
    if out_root is not None and asked.resolve() != run_dir.resolve():
        raise RefbenchError(
            f"--resume: run {name!r} lives in {run_dir}, not under --out {out_root}; "
            f"continue it with `{resume_command(name, db, run_dir)}`"
        )
    if not (run_dir / "config.json").is_file():
        raise RefbenchError(
            f"--resume: run {name!r}'s folder {run_dir} is gone or holds no config.json (moved or "
            f"deleted?); put it back, or train anew under another --name"
        )
    return run_dir, True


def refuse_overwrite(name: str, *, existing: dict | None, db: Path, run_dir: Path) -> None:
    """A new run never overwrites one: refused when the store holds the name or its folder holds a
    run (of another store). Called with the run's lock held, so that a run being started by another
    process at this moment is refused by the lock, not mistaken for a stranger's folder."""
    if existing:
        raise RefbenchError(
            f"run {name!r} already exists in {db} (status {existing['status']}); continue it with "
            f"`{resume_command(name, db, Path(existing['run_dir'] or run_dir))}`, or pick another --name"
        )
    if (run_dir / "config.json").is_file():
        raise RefbenchError(
            f"the folder {run_dir} already holds a run named {name!r} that the store {db} does not "
            f"know; resume it with the --db it was trained with and --resume, or pick another "
            f"--name or --out"
        )


@contextmanager
def run_lock(run_dir: Path, name: str):
    """Hold ``RUN/.lock`` while a run trains, so that two processes never train one run (a sweep
    launched twice, a --resume while the run still goes). The OS drops the lock when its process
    ends, even by SIGKILL, so a stale lock never blocks a resume. Creating it also proves the run
    folder is writable before anything else happens. A start that fails leaves no folder behind
    when this call made it and nothing but the lock is in it."""
    # The folders this call makes (the run's, and --out's when it was not there) go again if the start fails.
    made = [folder for folder in (run_dir.parent, run_dir) if not folder.exists()]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(run_dir / ".lock", "a+")
    except OSError as exc:
        raise RefbenchError(f"cannot write the run folder {run_dir}: {exc.strerror or exc}") from None
    failed = False
    try:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip()
                who = f" (process {holder})" if holder.isdigit() else ""
                raise RefbenchError(
                    f"run {name!r} is being trained by another process{who}; wait for it to end, or pick another --name"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
        yield
    except BaseException:
        failed = True
        raise
    finally:
        handle.close()
        if failed and run_dir in made and {p.name for p in run_dir.iterdir()} <= {".lock"}:
            shutil.rmtree(run_dir, ignore_errors=True)
            if run_dir.parent in made and not any(run_dir.parent.iterdir()):
                run_dir.parent.rmdir()


def lock_is_free(run_dir: Path) -> bool:
    """Whether no process holds ``RUN/.lock`` (the OS releases it when its holder dies)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: cannot tell
        return False
    try:
        with open(Path(run_dir) / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
            return True
    except FileNotFoundError:
        return True  # the folder is gone: nobody trains it
    except OSError:
        return False


def runs_table(db: Path):
    """The store's runs, where a run marked running whose lock is free shows as interrupted (it
    was killed, by SIGKILL or a machine that went away), with the command that resumes each
    interrupted run. A store that does not exist is one line, not a new empty store."""
    frame = Store(db, create=False).list_runs()
    hints = []
    for position, row in frame.iterrows():
        killed = row["status"] == "running" and row.get("run_dir") and lock_is_free(Path(row["run_dir"]))
        if killed:
            frame.at[position, "status"] = "interrupted"
        if killed or row["status"] == "interrupted":
            how = "was killed while it trained" if killed else "was stopped"
            folder = Path(row["run_dir"]) if row.get("run_dir") else DEFAULT_OUT / row["name"]
            hints.append(f"{row['name']} {how}; continue it with: {resume_command(row['name'], db, folder)}")
    return frame.drop(columns=["run_dir"], errors="ignore"), hints
