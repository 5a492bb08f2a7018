"""A training run end to end: its row in the store, its folder, resume, interruption.

``RUN_ROOT/NAME/`` holds ``config.json``, ``checkpoint/`` (for ``--resume``), ``.lock`` (held
while a process trains the run) and, when the run finishes, ``final/`` (the policy's denoiser as a
diffusers folder, or diffusers-format LoRA weights). A run's status in the store: running, finished,
interrupted (Ctrl-C / SIGTERM), diverged (too many non-finite steps) or failed; a run killed
outright is still "running" in the store, and ``runs_table`` (``refbench runs``, in
``run_folder.py`` with the rest of where a run lives) shows it as interrupted once its lock is free.
"""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path

from ..config import RunConfig, config_from_dict
from ..errors import CheckpointError, ConfigError, RefbenchError, RunInterrupted
from ..store import Store
from .processes import from_main_process
from .run_folder import locate_run, refuse_overwrite, resume_command, run_lock


def _diff(stored: dict, requested: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in requested.items():
        if isinstance(value, dict):
            out += _diff(stored.get(key, {}), value, f"{prefix}{key}.")
        elif stored.get(key) != value:
            out.append(f"{prefix}{key} ({stored.get(key)!r} stored, {value!r} asked)")
    return out


def resolve_resumed_config(stored: dict, overrides: dict) -> RunConfig:
    """The stored config, with only ``training.max_steps`` and ``report_to`` allowed to change on resume."""
    preset = overrides.get("preset")
    if preset is not None and preset != stored.get("preset"):
        raise ConfigError(
            f"--resume continues a run with its stored config; these differ: preset "
            f"({stored.get('preset')!r} stored, {preset!r} asked)"
        )
    overrides = {
        s: {k: v for k, v in values.items() if v is not None}
        for s, values in overrides.items()
        if isinstance(values, dict)
    }
    max_steps = overrides.get("training", {}).pop("max_steps", None)
    report_to = overrides.get("training", {}).pop("report_to", None)  # where the curves go may change
    conflicts = _diff(stored, {s: v for s, v in overrides.items() if v})
    if conflicts:
        raise ConfigError(f"--resume continues a run with its stored config; these differ: {', '.join(conflicts)}")
    for key, value in (("max_steps", max_steps), ("report_to", report_to)):
        if value is not None:
            stored = {**stored, "training": {**stored["training"], key: value}}
    return config_from_dict(stored)


def run_training(
    config: RunConfig,
    *,
    db: Path,
    out_root: Path | None = None,
    resume: bool | None = False,
    progress: bool = True,
    overrides: dict | None = None,
) -> Path | None:
    """Train; returns the run folder on the main process and None on the others.

    ``out_root`` None means the default (``runs``) for a new run and the recorded folder for a
    resumed one; ``resume`` None continues the run when the store holds it and starts it otherwise.
    Everything that can be checked is checked before the first step: the database opens for
    writing, the run exists (for --resume) or does not (otherwise), the run folder is writable and
    not in use by another process (a lock file held for the whole run, released by the OS even
    after SIGKILL), the checkpoint's files are whole, the model exists, and the data has usable
    pairs with readable images. What only the main process checks (the store, the lock, an existing
    run) is shared with the others, so every process ends with the same error instead of waiting
    for a peer that has stopped."""
    import torch
    from accelerate import PartialState

    from .sharding import make_accelerator

    # Half precision is for GPUs; on a CPU the same run goes in fp32 (accelerate refuses fp16 there).
    # cpu=True without a GPU also makes accelerate set up gloo when launched with several processes.
    gpu = torch.cuda.is_available()
    store, existing, failure, run_dir = None, None, None, None
    # The main process finds where the run lives before the Accelerator (whose log folder is in it) starts.
    main = PartialState(cpu=not gpu).is_main_process
    if main:
        try:
            # A database that cannot be opened for writing: one line, now. --resume never makes a new one.
            store = Store(db, announce=True, create=resume is not True)
            run_dir, resume = locate_run(config.name, store=store, db=db, out_root=out_root, resume=resume)
        except RefbenchError as exc:
            failure = str(exc)
    failure, run_dir, resume = from_main_process(failure, run_dir, resume)
    if failure:
        raise RefbenchError(failure)
    report_to = config.training.report_to
    accelerator = make_accelerator(
        mixed_precision=config.model.mixed_precision if gpu else "no",
        cpu=not gpu,
        log_with=None if report_to == "none" else report_to,
        project_dir=str(run_dir / "logs"),
    )
    with ExitStack() as held:
        if main:
            try:
                held.enter_context(run_lock(run_dir, config.name))
                existing = store.get_run(config.name)
                if not resume:
                    refuse_overwrite(config.name, existing=existing, db=db, run_dir=run_dir)
            except RefbenchError as exc:
                failure = str(exc)
        (failure,) = from_main_process(failure)
        if failure:
            raise RefbenchError(failure)
        finished = _run_training(
            config,
            accelerator,
            store,
            run_dir,
            db=db,
            existing=existing,
            resume=resume,
            progress=progress,
            overrides=overrides,
        )
    _end_process_group()
    return finished


def _end_process_group() -> None:
    """After a finished multi-process run, every process leaves the process group together: a gloo
    group left for interpreter exit to tear down sometimes aborted a process there ("terminate
    called without an active exception", seen once in the test suite under load)."""
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes > 1:
        state.wait_for_everyone()
        state.destroy_process_group()


def start_trackers(accelerator, config: RunConfig) -> None:
    """accelerate's trackers (TensorBoard: RUN/logs/NAME; W&B: project refbench), with the config
    flattened to scalars as hyperparameters. A tracker whose package is missing is one line."""
    flat = {}
    for section, values in config.to_dict().items():
        for key, value in values.items() if isinstance(values, dict) else [(None, values)]:
            name = f"{section}.{key}" if key else section
            flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    try:
        accelerator.init_trackers(
            config.name if config.training.report_to == "tensorboard" else "refbench",
            config=flat,
            init_kwargs={"wandb": {"name": config.name}},
        )
    except (ImportError, ModuleNotFoundError) as exc:
        package = "tensorboard" if config.training.report_to == "tensorboard" else "wandb"
        raise RefbenchError(
            f"training.report_to {config.training.report_to} needs the {package} package (pip install {package}): {exc}"
        ) from None


def open_latent_cache(config: RunConfig, pairs, accelerator, progress: bool):
    """The run's latent cache (built first if its folder has none), or None without one."""
    if not config.data.latent_cache:
        return None
    from .cache_build import build_latent_cache, cache_fingerprint
    from .latent_cache import LatentCache

    folder = Path(config.data.latent_cache)
    if not (folder / "meta.json").is_file() or not json.loads((folder / "meta.json").read_text()).get("complete"):
        if accelerator.is_main_process:
            # A status line: stderr, so that what a command prints on stdout (bench --json) stays clean.
            print(f"building the latent cache {folder} (once; later runs read it)", file=sys.stderr, flush=True)
        build_latent_cache(config, folder, accelerator=accelerator, progress=progress)
    cache = LatentCache.open(folder, cache_fingerprint(config, pairs.fingerprint))
    for index in cache.unreadable():  # known from the build: counted up front
        pairs.note_unreadable(int(index))
    return cache


def _resumed_config(run_dir: Path, overrides: dict | None) -> RunConfig:
    path = run_dir / "config.json"
    try:
        stored = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RefbenchError(f"the run's config {path} is not readable JSON ({exc}); restore it from a copy") from None
    return resolve_resumed_config(stored, overrides or {})


def _run_training(
    config: RunConfig,
    accelerator,
    store: Store | None,
    run_dir: Path,
    *,
    db: Path,
    existing,
    resume: bool,
    progress: bool,
    overrides: dict | None,
) -> Path | None:
    from ..provenance import git_revision, package_versions
    from .checkpoint import has_checkpoint, load_checkpoint
    from .data import load_preference_pairs
    from .run_log import RunLog
    from .stopping import TrainingDiverged, TrainingInterrupted
    from .trainer import Trainer

    main = accelerator.is_main_process
    saved = None
    if resume:
        config = _resumed_config(run_dir, overrides)
        checkpoint = run_dir / "checkpoint"
        if has_checkpoint(checkpoint):
            saved = load_checkpoint(checkpoint)  # every file checked now; the run's status is left as it was
            done = saved["state"]["step"]
            if existing and existing["status"] == "finished" and done >= config.training.max_steps:
                if main:
                    print(
                        f"run {config.name} already finished at step {done}; nothing to do "
                        f"(--max-steps above {done} trains it further)",
                        flush=True,
                    )
                return run_dir if main else None
        elif main:
            print(f"{config.name}: no checkpoint yet in {checkpoint}; starting from step 0", flush=True)
    saved_step = saved["state"]["step"] if saved else 0
    from .backends import check_model_source
    from .data_sources import check_data_source, check_gone

    check_gone(config.data)  # a withdrawn data set (the SD presets' default) is said before the model is looked at
    check_model_source(config.model)
    check_data_source(config.data)  # then a missing location, a bad column mapping: before the data is read
    with accelerator.main_process_first():  # the main process builds the toy pairs if they are missing
        pairs = load_preference_pairs(config)
    latent_cache = open_latent_cache(config, pairs, accelerator, progress)
    if latent_cache is None:
        pairs.check_readable()
    if main:
        try:
            (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
        except OSError as exc:
            raise RefbenchError(f"cannot write the run folder {run_dir}: {exc.strerror}") from None
        if not existing:
            store.create_run(
                config.name,
                method=config.method.name,
                preset=config.preset,
                config=config.to_dict(),
                seed=config.training.seed,
                run_dir=str(run_dir.resolve()),
                git_revision=git_revision(),
                versions=package_versions(),
            )
        else:  # a resume may raise max_steps: the store's copy of the config follows the folder's
            store.set_run_config(config.name, config.to_dict())
        # Skips found on load are stored now, so a killed run keeps them too.
        store.set_run_status(config.name, "running", f"data skips: {pairs.skipped.as_dict()}")
    tracker = None
    if config.training.report_to != "none":
        start_trackers(accelerator, config)
        tracker = accelerator.log
    run_log = RunLog(store, config.name, tracker=tracker) if main else None
    trainer = None

    def step_reached() -> int:
        return max(trainer.step if trainer else 0, saved_step)

    def save_snapshot(step: int) -> None:
        _save_final(trainer, _snapshot_folder(run_dir, step) / "final")  # every process: gathered under FSDP
        if main:
            _record_snapshot(trainer, store, run_dir, step)
        accelerator.wait_for_everyone()

    try:
        trainer = Trainer(
            config,
            pairs,
            run_dir,
            run_log,
            accelerator=accelerator,
            progress=progress,
            latent_cache=latent_cache,
            on_snapshot=save_snapshot,
        )
        if saved is not None and trainer.restore(saved) and main:
            print(f"resuming {config.name} from step {trainer.step}", flush=True)
        trainer.train()
    except (KeyboardInterrupt, TrainingInterrupted) as exc:
        saved_now = isinstance(exc, TrainingInterrupted)  # a second Ctrl-C stops without saving
        step = step_reached()
        if main:
            run_log.flush()
            store.set_run_status(config.name, "interrupted", f"stopped at step {step}; {_skips(trainer, pairs)}")
        what = "checkpoint saved" if saved_now else "the last periodic checkpoint is kept"
        raise RunInterrupted(
            f"interrupted at step {step}; {what}. Continue with: {resume_command(config.name, db, run_dir)}"
        ) from None
    except TrainingDiverged as exc:
        if main:
            store.set_run_status(config.name, "diverged", f"{exc}; {_skips(trainer, pairs)}"[:1000])
        raise RefbenchError(
            f"run {config.name} diverged: {exc}; its metrics and events are in the store (status 'diverged')"
        ) from None
    except CheckpointError:
        if main:  # the checkpoint did not fit: the run is where it was
            store.set_run_status(config.name, existing["status"], existing["message"])
        raise
    except BaseException as exc:
        step = step_reached()
        if main:
            run_log.flush()
            store.set_run_status(config.name, "failed", f"step {step}: {type(exc).__name__}: {exc}"[:500])
        if isinstance(exc, OSError):  # a full disk, a folder removed under the run: one line
            raise RefbenchError(f"training stopped at step {step}: {exc}") from None
        raise
    if tracker is not None:
        accelerator.end_training()
    report = trainer.process_report()
    _save_final(trainer, run_dir / "final")
    if main:
        (run_dir / "processes.json").write_text(json.dumps(report, indent=1))
        message = _skips(trainer, pairs)
        run_log.flush(final=True)
        store.set_run_status(config.name, "finished", message)
        if trainer.skipped_steps or pairs.skipped.counts:
            print(f"{config.name}: {message}", flush=True)
    return run_dir if main else None


def _skips(trainer, pairs) -> str:
    """What was left out, for the run's message in the store and the end of the run."""
    steps = (
        f"{trainer.skipped_steps} steps skipped ({trainer.nonfinite_steps} non-finite)"
        if trainer
        else "0 steps skipped"
    )
    return f"{steps}; data skips: {pairs.skipped.as_dict()}"


def snapshot_name(run: str, step: int) -> str:
    """The store name of the first ``step`` steps of ``run`` (``training.snapshot_steps``)."""
    return f"{run}.step{step}"


def _snapshot_folder(run_dir: Path, step: int) -> Path:
    return run_dir / "snapshots" / f"step-{step}"


def _record_snapshot(trainer, store: Store, run_dir: Path, step: int) -> None:
    """The policy after ``step`` steps (saved in ``RUN/snapshots/step-N/final``) as a finished run of
    its own: a store row ``RUN.stepN`` whose config says max_steps = N, so that generate, score and
    win rates take it like any run. Written again (the same weights) if a resumed run repeats the step."""
    import dataclasses

    from ..provenance import git_revision, package_versions

    config = trainer.config
    folder = _snapshot_folder(run_dir, step)
    name = snapshot_name(config.name, step)
    short = dataclasses.replace(
        config, name=name, training=dataclasses.replace(config.training, max_steps=step, snapshot_steps=())
    )
    if store.get_run(name) is None:
        store.create_run(
            name,
            method=config.method.name,
            preset=config.preset,
            config=short.to_dict(),
            seed=config.training.seed,
            run_dir=str(folder.resolve()),
            git_revision=git_revision(),
            versions=package_versions(),
        )
    store.set_run_status(name, "finished", f"the first {step} steps of {config.name}")


def _save_final(trainer, folder: Path) -> None:
    """The finished policy in the formats diffusers loads without refbench: full fine-tuning as a
    ``UNet2DConditionModel`` folder (``final/unet``) or, for SD3 / flow models, an
    ``SD3Transformer2DModel`` folder (``final/transformer``): the backend's ``denoiser_folder``;
    LoRA as diffusers-format LoRA weights (``final/pytorch_lora_weights.safetensors``, for
    ``pipe.load_lora_weights(final)``), in the format of the backend's pipeline.

    Called on every process: under FSDP the weights are gathered to the main process's CPU (one
    full copy there, none on any device), and only the main process writes."""
    from .modelset import POLICY

    models, backend, acc = trainer.models, trainer.backend, trainer.accelerator
    main = acc.is_main_process
    if main:
        folder.mkdir(parents=True, exist_ok=True)
    denoiser = acc.unwrap_model(models.policy_module)
    if not models.lora:
        if not trainer.sharded:
            if main:
                denoiser.save_pretrained(str(folder / backend.denoiser_folder))
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        from .sharding import reshard

        reshard(denoiser)
        whole = get_model_state_dict(denoiser, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if main:
            write_denoiser_folder(denoiser, whole, folder / backend.denoiser_folder)
        return
    from peft.utils import get_peft_model_state_dict

    from .sharding import full_tensor

    layers = get_peft_model_state_dict(denoiser, adapter_name=POLICY)
    layers = {k: full_tensor(v.detach()).contiguous().cpu() for k, v in layers.items()}  # small: LoRA only
    if main:
        backend.save_lora(layers, folder)


def write_denoiser_folder(denoiser, state: dict, folder: Path) -> None:
    """The files diffusers' ``save_pretrained`` writes, from a gathered state dict: ``config.json``
    naming the model's own class (FSDP2 subclasses it as ``FSDP<name>``, which diffusers would
    write) and the safetensors (split with an index past 10 GB)."""
    from huggingface_hub import save_torch_state_dict
    from torch.distributed.fsdp import FSDPModule

    original = next(c for c in type(denoiser).__mro__ if not issubclass(c, FSDPModule))
    config = json.loads(denoiser.to_json_string())
    config["_class_name"] = original.__name__
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    # A gathered tensor can be a view into a larger buffer, which safetensors refuses to save: own copies.
    for name, tensor in state.items():
        if tensor.untyped_storage().nbytes() != tensor.nbytes:
            state[name] = tensor.clone()
    save_torch_state_dict(
        state, folder, filename_pattern="diffusion_pytorch_model{suffix}.safetensors", max_shard_size="10GB"
    )


__all__ = ["run_training", "resolve_resumed_config"]
