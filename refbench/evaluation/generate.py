"""`refbench generate`: images for a prompt set from a run's policy (or the base model).

Every image is a function of (model, prompt, seed): its initial noise depends only on
(prompt, seed), so two models are compared on identical noise. Images go to
``RUN_ROOT/RUN/samples/SET/``, one row each in ``samples``; what already exists (row and
file) is not generated again, so an interrupted generate resumes where it stopped.

With ``unet`` (``--unet SOURCE``: a released denoiser such as Diffusion-DPO's, see
``denoisers``) the images come from the base pipeline of ``preset`` / ``model`` with that
denoiser in place of its own, filed under the name given for ``run`` (which must not be a
training run or ``base``); every row records the denoiser's source and sha256, and a name
never holds samples of two denoisers. Later calls on that name reuse the recorded source.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ..errors import RefbenchError
from ..hub import looks_local
from ..store import Store, now

BASE = "base"


def sample_id(run: str, prompt_set: str, prompt: str, seed: int) -> str:
    return hashlib.sha1(f"{run}|{prompt_set}|{prompt}|{seed}".encode()).hexdigest()[:20]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def prompt_texts(prompt_set: str) -> list[str]:
    """The prompts of a named set (``name`` or ``name=local/file``)."""
    from .prompt_sets import load_prompt_set

    try:
        return load_prompt_set(prompt_set)
    except ValueError as exc:
        raise RefbenchError(str(exc)) from None


def prompt_set_fingerprint(prompts: list[str]) -> str:
    """sha256 of a prompt set's prompts in order, one per line: which set a sample came from."""
    return hashlib.sha256("\n".join(prompts).encode()).hexdigest()


def run_config(run: str, store: Store, *, preset: str = "toy", model: str | None = None):
    """(config, store record) of a run; for the initial model (``base``, from --preset / --model) the record is None."""
    if run == BASE:
        from ..config import load_config

        return load_config(preset=preset, overrides={"model": {"pretrained": model}}), None
    record = store.get_run(run)
    if record is None:
        raise RefbenchError(f"no run named {run!r} in {store.path}; `refbench runs` lists them (or use 'base')")
    from ..config import config_from_dict

    return config_from_dict(record["config"]), record


def recorded_denoiser(store: Store, run: str) -> str | None:
    """The ``--unet`` source the samples filed under ``run`` were made with (None: a run's own, or none yet)."""
    frame = store.query(
        "SELECT DISTINCT denoiser_source FROM samples WHERE run = ? AND denoiser_source IS NOT NULL", [run]
    )
    return frame["denoiser_source"].iloc[0] if len(frame) else None


def check_denoiser_name(store: Store, run: str) -> None:
    """Samples of a released denoiser go under a name of their own, never a run's or the base's."""
    if run == BASE or store.get_run(run) is not None:
        raise RefbenchError(
            f"--unet: {run!r} is {'the base model' if run == BASE else 'a training run'}; give the samples of "
            f"that denoiser a name of their own (e.g. `refbench generate dpo-sd15 --unet SOURCE --preset sd15`)"
        )


def sampler_for(
    run: str, store: Store, *, preset: str = "toy", model: str | None = None, denoiser_path: Path | None = None
):
    """The sampler of a run's final policy, or of the initial model (``base``, from --preset / --model),
    or of the initial model with the denoiser in ``denoiser_path`` (``--unet``)."""
    from ..training.backends import backend_class

    config, record = run_config(BASE if denoiser_path is not None else run, store, preset=preset, model=model)
    final = None
    if record is not None:
        final = Path(record["run_dir"]) / "final"
        if not final.is_dir() and record["status"] == "diverged":
            raise RefbenchError(f"run {run!r} diverged and has no final model ({record['message']})")
        if not final.is_dir():
            from ..training.run_folder import resume_command

            raise RefbenchError(
                f"run {run!r} has no final model yet (status {record['status']}); finish it with "
                f"`{resume_command(run, store.path, Path(record['run_dir']))}`"
            )
    backend = backend_class(config.model.kind)
    backend.check_source(config.model)
    try:
        return backend.sampler(config.model, final, denoiser_path)
    except ValueError as exc:  # a denoiser that does not fit the pipeline
        raise RefbenchError(str(exc).splitlines()[0]) from None


def default_prompt_set(run: str, store: Store, *, preset: str = "toy", model: str | None = None) -> str:
    """The prompt set used when none is named: the model kind's (toy-test for the toy worlds, else
    partiprompts); ``run`` is a training run, ``base`` or a ``--unet`` name (the preset's kind)."""
    from ..training.backends import backend_class

    config = run_config(run if store.get_run(run) is not None else BASE, store, preset=preset, model=model)[0]
    return backend_class(config.model.kind).default_prompts


def generate(
    run: str,
    *,
    prompt_set: str | None,
    db: Path,
    out_root: Path,
    seeds: int = 1,
    num_prompts: int | None = None,
    guidance_scale: float | None = None,
    steps: int | None = None,
    batch_size: int = 64,
    progress: bool = True,
    preset: str = "toy",
    model: str | None = None,
    regenerate: bool = False,
    unet: str | None = None,
) -> dict[str, int]:
    """Generate missing images; returns counts of generated and already present images. Samples of
    the run on the set made under another protocol are refused, or with ``regenerate`` removed (rows,
    scores and images) and made again. ``unet``: a released denoiser's folder or hub id (see above)."""
    from PIL import Image
    from tqdm.auto import tqdm

    from ..training.backends import backend_class
    from ..training.backends.samplers import DEFAULT_STEPS

    if seeds < 1 or (num_prompts is not None and num_prompts < 1):
        raise RefbenchError("--seeds and --num-prompts must be >= 1")
    from accelerate import PartialState

    steps = DEFAULT_STEPS if steps is None else steps
    store = Store(db)
    unet = unet or recorded_denoiser(store, run)
    denoiser_path = denoiser_sha = None
    if unet is not None:
        from .denoisers import denoiser_sha256, resolve_denoiser

        check_denoiser_name(store, run)
        denoiser_path = resolve_denoiser(unet)
        if looks_local(unet):  # recorded so that a later call from another folder finds it
            unet = str(Path(unet).expanduser().resolve())
        denoiser_sha = denoiser_sha256(denoiser_path)
    prompt_set = prompt_set or default_prompt_set(run, store, preset=preset, model=model)
    every_prompt = prompt_texts(prompt_set)
    fingerprint = prompt_set_fingerprint(every_prompt)
    prompts = every_prompt[:num_prompts]
    wanted = [(p, s) for p in prompts for s in range(seeds)]
    if guidance_scale is None:
        guidance_scale = backend_class(
            run_config(BASE if unet else run, store, preset=preset, model=model)[0].model.kind
        ).default_guidance
    state = PartialState(cpu=not _has_gpu())
    check_same_denoiser(store, run, denoiser_sha, remade=prompt_set if regenerate else None)
    if regenerate:
        if state.is_main_process:
            for path in store.delete_samples(run, prompt_set):
                Path(path).unlink(missing_ok=True)
        state.wait_for_everyone()
    else:  # one set of samples, one protocol: never top up samples made another way
        check_same_protocol(store, run, prompt_set, steps=steps, guidance_scale=guidance_scale, fingerprint=fingerprint)
    done = set(
        store.query(
            "SELECT prompt, seed, image_path FROM samples WHERE run = ? AND prompt_set = ?", [run, prompt_set]
        ).itertuples(index=False, name=None)
    )
    present = {(p, s) for p, s, path in done if Path(path).is_file()}
    todo = [(p, s) for p, s in wanted if (p, s) not in present]
    # Under `accelerate launch`, each process takes every n-th image; each writes its own rows
    # (the store serialises writers). Images depend only on (prompt, seed), not on the split.
    todo_here = todo[state.process_index :: state.num_processes]
    folder = Path(out_root) / run / "samples" / prompt_set
    if todo_here:
        sampler = sampler_for(run, store, preset=preset, model=model, denoiser_path=denoiser_path)
        folder.mkdir(parents=True, exist_ok=True)
        bar = tqdm(
            total=len(todo_here), desc=f"generate {run}", unit="img", disable=not (progress and state.is_main_process)
        )
        for start in range(0, len(todo_here), batch_size):
            chunk = todo_here[start : start + batch_size]
            images = sampler([p for p, _ in chunk], [s for _, s in chunk], guidance_scale=guidance_scale, steps=steps)
            rows = []
            for (prompt, seed), image in zip(chunk, images):
                path = folder / f"{_slug(prompt)}-s{seed}.png"
                Image.fromarray(image).save(path)
                rows.append(
                    {
                        "sample_id": sample_id(run, prompt_set, prompt, seed),
                        "run": run,
                        "prompt_set": prompt_set,
                        "prompt": prompt,
                        "seed": seed,
                        "image_path": str(path),
                        "guidance_scale": guidance_scale,
                        "num_steps": steps,
                        "created_at": now(),
                        "sampler": sampler.name,
                        "height": image.shape[0],
                        "width": image.shape[1],
                        "prompt_set_sha256": fingerprint,
                        "denoiser_source": unet,
                        "denoiser_sha256": denoiser_sha,
                    }
                )
            store.upsert("samples", rows)  # per batch: an interruption keeps what was made
            bar.update(len(chunk))
        bar.close()
    state.wait_for_everyone()
    return {
        "generated": len(todo),
        "present": len(wanted) - len(todo),
        "main": state.is_main_process,
        "prompt_set": prompt_set,
    }


def check_same_protocol(
    store: Store, run: str, prompt_set: str, *, steps: int, guidance_scale: float, fingerprint: str
) -> None:
    """Refuse, in one line, to add samples to a set that was made with other steps, guidance or prompts."""
    import math

    import pandas as pd

    frame = store.query(
        "SELECT num_steps, guidance_scale, prompt_set_sha256, count(*) AS n FROM samples "
        "WHERE run = ? AND prompt_set = ? GROUP BY ALL",
        [run, prompt_set],
    )
    for row in frame.itertuples(index=False):
        other = []
        if not pd.isna(row.num_steps) and int(row.num_steps) != steps:
            other.append(f"{int(row.num_steps)} steps")
        if not pd.isna(row.guidance_scale) and not math.isclose(float(row.guidance_scale), guidance_scale):
            other.append(f"guidance {float(row.guidance_scale):g}")
        if isinstance(row.prompt_set_sha256, str) and row.prompt_set_sha256 != fingerprint:
            other.append("another list of prompts under that name")
        if other:
            raise RefbenchError(
                f"{run} already has {int(row.n)} samples on {prompt_set} made with {', '.join(other)}; asked "
                f"{steps} steps, guidance {guidance_scale:g}: add --regenerate to remake them all under the asked "
                f"protocol, or ask for theirs (--steps, --guidance-scale)"
            )


def check_same_denoiser(store: Store, run: str, sha256: str | None, *, remade: str | None = None) -> None:
    """Refuse, in one line, to add samples of one denoiser to a name holding another's (outside the
    prompt set ``remade``, whose samples --regenerate removes)."""
    frame = store.query(
        "SELECT DISTINCT denoiser_source, denoiser_sha256 FROM samples WHERE run = ? "
        "AND denoiser_sha256 IS DISTINCT FROM ? AND prompt_set IS DISTINCT FROM ?",
        [run, sha256, remade],
    )
    if len(frame):
        other = frame["denoiser_source"].iloc[0]
        theirs = (
            f"the denoiser {other} (sha256 {str(frame['denoiser_sha256'].iloc[0])[:12]})" if other else "its own model"
        )
        raise RefbenchError(
            f"{run} already has samples made with {theirs}; file these under another name"
            + ("" if remade else ", or add --regenerate to remake them with this one")
        )


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()
