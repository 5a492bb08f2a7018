"""`refbench generate`: images for a prompt set from a run's policy (or the base model).

Every image is a function of (model, prompt, seed): its initial noise depends only on
(prompt, seed), so two models are compared on identical noise. Images go to
``RUN_ROOT/RUN/samples/SET/``, one row each in ``samples``; what already exists (row and
file) is not generated again, so an interrupted generate resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ..errors import RefbenchError
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


def sampler_for(run: str, store: Store, *, preset: str = "toy", model: str | None = None):
    """The sampler of a run's final policy, or of the initial model (``base``, from --preset / --model)."""
    from .samplers import PipelineSampler, ToyFlowSampler, ToySampler

    if run == BASE:
        from ..config import load_config

        config = load_config(preset=preset, overrides={"model": {"pretrained": model}})
        final = None
    else:
        record = store.get_run(run)
        if record is None:
            raise RefbenchError(f"no run named {run!r} in {store.path}; `refbench runs` lists them (or use 'base')")
        from ..config import config_from_dict

        config = config_from_dict(record["config"])
        final = Path(record["run_dir"]) / "final"
        if not final.is_dir() and record["status"] == "diverged":
            raise RefbenchError(f"run {run!r} diverged and has no final model ({record['message']})")
        if not final.is_dir():
            raise RefbenchError(f"run {run!r} has no final model yet (status {record['status']}); finish it with "
                                f"`refbench train --name {run} --resume`")
    from ..training.backends import check_model_source

    check_model_source(config.model)
    if config.model.kind == "toy":
        from ..training.backends.toy import toy_model_folder

        return config.model.kind, ToySampler(toy_model_folder(config.model.pretrained), final / "unet" if final else None)
    if config.model.kind == "toy-flow":
        from ..training.backends.toy_flow import toy_flow_folder

        return config.model.kind, ToyFlowSampler(toy_flow_folder(config.model.pretrained),
                                                 final / "transformer" if final else None)
    pipeline_kwargs, call_kwargs = {}, {}
    if config.model.kind == "sd3":  # T5 as in training: present or not, the same prompt length
        from ..training.backends.flow import T5_MAX_LENGTH, text_pipeline_kwargs

        pipeline_kwargs, call_kwargs = text_pipeline_kwargs(config.model), {"max_sequence_length": T5_MAX_LENGTH}
    sampler = PipelineSampler(config.model.kind, config.model.pretrained, config.model.resolution,
                              final_folder=final, lora_rank=config.model.lora_rank,
                              pipeline_kwargs=pipeline_kwargs, call_kwargs=call_kwargs)
    return config.model.kind, sampler


def generate(run: str, *, prompt_set: str, db: Path, out_root: Path, seeds: int = 1, num_prompts: int | None = None,
             guidance_scale: float | None = None, steps: int | None = None, batch_size: int = 64,
             progress: bool = True, preset: str = "toy", model: str | None = None) -> dict[str, int]:
    """Generate missing images; returns counts of generated and already present images."""
    from PIL import Image
    from tqdm.auto import tqdm

    from .samplers import DEFAULT_GUIDANCE, DEFAULT_STEPS

    if seeds < 1 or (num_prompts is not None and num_prompts < 1):
        raise RefbenchError("--seeds and --num-prompts must be >= 1")
    steps = DEFAULT_STEPS if steps is None else steps
    store = Store(db)
    every_prompt = prompt_texts(prompt_set)
    fingerprint = prompt_set_fingerprint(every_prompt)
    prompts = every_prompt[:num_prompts]
    wanted = [(p, s) for p in prompts for s in range(seeds)]
    done = set(store.query("SELECT prompt, seed, image_path FROM samples WHERE run = ? AND prompt_set = ?",
                           [run, prompt_set]).itertuples(index=False, name=None))
    present = {(p, s) for p, s, path in done if Path(path).is_file()}
    todo = [(p, s) for p, s in wanted if (p, s) not in present]
    # Under `accelerate launch`, each process takes every n-th image; each writes its own rows
    # (the store serialises writers). Images depend only on (prompt, seed), not on the split.
    from accelerate import PartialState

    state = PartialState(cpu=not _has_gpu())
    todo_here = todo[state.process_index::state.num_processes]
    folder = Path(out_root) / run / "samples" / prompt_set
    if todo_here:
        kind, sampler = sampler_for(run, store, preset=preset, model=model)
        guidance_scale = DEFAULT_GUIDANCE[kind] if guidance_scale is None else guidance_scale
        folder.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=len(todo_here), desc=f"generate {run}", unit="img", disable=not (progress and state.is_main_process))
        for start in range(0, len(todo_here), batch_size):
            chunk = todo_here[start:start + batch_size]
            images = sampler([p for p, _ in chunk], [s for _, s in chunk], guidance_scale=guidance_scale, steps=steps)
            rows = []
            for (prompt, seed), image in zip(chunk, images):
                path = folder / f"{_slug(prompt)}-s{seed}.png"
                Image.fromarray(image).save(path)
                rows.append({"sample_id": sample_id(run, prompt_set, prompt, seed), "run": run, "prompt_set": prompt_set,
                             "prompt": prompt, "seed": seed, "image_path": str(path), "guidance_scale": guidance_scale,
                             "num_steps": steps, "created_at": now(), "sampler": sampler.name,
                             "height": image.shape[0], "width": image.shape[1], "prompt_set_sha256": fingerprint})
            store.upsert("samples", rows)  # per batch: an interruption keeps what was made
            bar.update(len(chunk))
        bar.close()
    state.wait_for_everyone()
    return {"generated": len(todo), "present": len(wanted) - len(todo), "main": state.is_main_process}


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()
