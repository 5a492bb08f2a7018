"""A training run end to end: its row in the store, its folder, resume, interruption.

``RUN_ROOT/NAME/`` holds ``config.json``, ``checkpoint/`` (for ``--resume``), ``.lock`` (held
while a process trains the run) and, when the run finishes, ``final/`` (the policy UNet as a
diffusers folder, or the LoRA adapter). A run's status in the store: running, finished,
interrupted (Ctrl-C / SIGTERM), diverged (too many non-finite steps) or failed; a run killed
outright stays "running" until ``--resume`` continues it.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager, nullcontext
from pathlib import Path

from ..config import RunConfig, config_from_dict
from ..errors import ConfigError, RefbenchError
from ..store import Store


def load_preference_pairs(config: RunConfig):
    from .data import PreferencePairs, load_pairs_table

    source = config.data.source
    if source == "toy":
        from ..toy.dataset import ensure_toy_pairs, pairs_path

        source = str(pairs_path(config.data.split, ensure_toy_pairs()))
    return PreferencePairs(load_pairs_table(source, config.data.split), resolution=config.model.resolution,
                           max_pairs=config.data.max_pairs)


def _diff(stored: dict, requested: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in requested.items():
        if isinstance(value, dict):
            out += _diff(stored.get(key, {}), value, f"{prefix}{key}.")
        elif stored.get(key) != value:
            out.append(f"{prefix}{key} ({stored.get(key)!r} stored, {value!r} asked)")
    return out


def resolve_resumed_config(stored: dict, overrides: dict) -> RunConfig:
    """The stored config, with only ``training.max_steps`` allowed to change on resume."""
    overrides = {s: {k: v for k, v in values.items() if v is not None} for s, values in overrides.items() if isinstance(values, dict)}
    max_steps = overrides.get("training", {}).pop("max_steps", None)
    conflicts = _diff(stored, {s: v for s, v in overrides.items() if v})
    if conflicts:
        raise ConfigError(f"--resume continues a run with its stored config; these differ: {', '.join(conflicts)}")
    if max_steps is not None:
        stored = {**stored, "training": {**stored["training"], "max_steps": max_steps}}
    return config_from_dict(stored)


def run_training(config: RunConfig, *, db: Path, out_root: Path, resume: bool = False, progress: bool = True,
                 overrides: dict | None = None) -> Path | None:
    """Train; returns the run folder on the main process and None on the others.

    Everything that can be checked is checked before the first step: the database opens for
    writing, the run folder is writable and not in use by another process (a lock file held
    for the whole run, released by the OS even after SIGKILL), the model exists, and the data
    has usable pairs with readable images."""
    from accelerate import Accelerator

    import torch

    # Half precision is for GPUs; on a CPU the same run goes in fp32 (accelerate refuses fp16 there).
    # cpu=True without a GPU also makes accelerate set up gloo when launched with several processes.
    gpu = torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision=config.model.mixed_precision if gpu else "no", cpu=not gpu)
    main = accelerator.is_main_process
    store = Store(db) if main else None  # a database that cannot be opened for writing: one line, now
    run_dir = Path(out_root) / config.name
    with run_lock(run_dir, config.name) if main else nullcontext():
        return _run_training(config, accelerator, store, run_dir, db=db, resume=resume, progress=progress,
                             overrides=overrides)


def _run_training(config: RunConfig, accelerator, store: Store | None, run_dir: Path, *, db: Path, resume: bool,
                  progress: bool, overrides: dict | None) -> Path | None:
    from ..provenance import git_revision, package_versions
    from .run_log import RunLog
    from .stopping import TrainingDiverged, TrainingInterrupted
    from .trainer import Trainer

    main = accelerator.is_main_process
    existing = store.get_run(config.name) if main else None
    if existing and not resume:
        raise RefbenchError(f"run {config.name!r} already exists in {db} (status {existing['status']}); "
                            f"add --resume to continue it, or pick another --name")
    if resume and (run_dir / "config.json").is_file():
        config = resolve_resumed_config(json.loads((run_dir / "config.json").read_text()), overrides or {})
    from .backends import check_model_source

    check_model_source(config.model)
    with accelerator.main_process_first():  # the main process builds the toy pairs if they are missing
        pairs = load_preference_pairs(config)
        pairs.check_readable()
    if main:
        try:
            (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
        except OSError as exc:
            raise RefbenchError(f"cannot write the run folder {run_dir}: {exc.strerror}") from None
        if not existing:
            store.create_run(config.name, method=config.method.name, preset=config.preset, config=config.to_dict(),
                             seed=config.training.seed, run_dir=str(run_dir), git_revision=git_revision(),
                             versions=package_versions())
        # Skips found on load are stored now, so a killed run keeps them too.
        store.set_run_status(config.name, "running", f"data skips: {pairs.skipped.as_dict()}")
    run_log = RunLog(store, config.name) if main else None
    trainer = None
    try:
        trainer = Trainer(config, pairs, run_dir, run_log, accelerator=accelerator, progress=progress)
        if resume and trainer.restore() and main:
            print(f"resuming {config.name} from step {trainer.step}", flush=True)
        trainer.train()
    except (KeyboardInterrupt, TrainingInterrupted) as exc:
        saved = isinstance(exc, TrainingInterrupted)  # a second Ctrl-C stops without saving
        step = trainer.step if trainer else 0
        if main:
            run_log.flush()
            store.set_run_status(config.name, "interrupted", f"stopped at step {step}; {_skips(trainer, pairs)}")
        what = "checkpoint saved" if saved else "the last periodic checkpoint is kept"
        raise RefbenchError(f"interrupted at step {step}; {what}. Continue with: "
                            f"refbench train --name {config.name} --resume") from None
    except TrainingDiverged as exc:
        if main:
            store.set_run_status(config.name, "diverged", f"{exc}; {_skips(trainer, pairs)}"[:1000])
        raise RefbenchError(f"run {config.name} diverged: {exc}; its metrics and events are in the store "
                            f"(status 'diverged')") from None
    except BaseException as exc:
        step = trainer.step if trainer else 0
        if main:
            run_log.flush()
            store.set_run_status(config.name, "failed", f"step {step}: {type(exc).__name__}: {exc}"[:500])
        if isinstance(exc, OSError):  # a full disk, a folder removed under the run: one line
            raise RefbenchError(f"training stopped at step {step}: {exc}") from None
        raise
    report = trainer.process_report()
    if main:
        (run_dir / "processes.json").write_text(json.dumps(report, indent=1))
        _save_final(trainer, run_dir / "final")
        message = _skips(trainer, pairs)
        run_log.flush(final=True)
        store.set_run_status(config.name, "finished", message)
        if trainer.skipped_steps or pairs.skipped.counts:
            print(f"{config.name}: {message}", flush=True)
    return run_dir if main else None


def _skips(trainer, pairs) -> str:
    """What was left out, for the run's message in the store and the end of the run."""
    steps = f"{trainer.skipped_steps} steps skipped ({trainer.nonfinite_steps} non-finite)" if trainer else "0 steps skipped"
    return f"{steps}; data skips: {pairs.skipped.as_dict()}"


@contextmanager
def run_lock(run_dir: Path, name: str):
    """Hold ``RUN/.lock`` while a run trains, so that two processes never train one run (a sweep
    launched twice, a --resume while the run still goes). The OS drops the lock when its process
    ends, even by SIGKILL, so a stale lock never blocks a resume. Creating it also proves the run
    folder is writable before anything else happens."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(run_dir / ".lock", "a+")
    except OSError as exc:
        raise RefbenchError(f"cannot write the run folder {run_dir}: {exc.strerror or exc}") from None
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
                raise RefbenchError(f"run {name!r} is being trained by another process{who}; "
                                    f"wait for it to end, or pick another --name") from None
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
        yield
    finally:
        handle.close()


def _save_final(trainer, folder: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    models = trainer.models
    if models.lora:
        save_file({k: v.contiguous().cpu() for k, v in models.policy_state().items()}, str(folder / "policy_lora.safetensors"))
        (folder / "lora.json").write_text(json.dumps({"rank": trainer.config.model.lora_rank}))
    else:
        trainer.accelerator.unwrap_model(models.policy_module).save_pretrained(str(folder / "unet"))


__all__ = ["run_training", "load_preference_pairs", "resolve_resumed_config"]
