"""`refbench timestep-analysis RUN`: the implicit reward per timestep interval (Fig. 2, Fig. 5).

Every one of N validation pairs is evaluated in each of K equal intervals of [0, T): one t
drawn inside the interval and one noise, shared by winner and loser (as in training). The
run's final policy, its reference (the final reference of a syncing run, the initial model
otherwise; or ``against="init"``) and the initial model each run one forward pass over those
2NK noisy images, in large batches; everything else is bookkeeping. The statistics are in
``refbench.method.interval_stats``; rows go to ``timestep_stats`` under the analysis name
(``reference`` or ``init``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..errors import RefbenchError
from ..store import Store

__all__ = ["analyse_run", "evaluate_errors", "pair_draws", "DEFAULT_INTERVALS"]

DEFAULT_INTERVALS = 10  # the paper's 10 intervals


def _load_run(store: Store, run: str):
    from ..config import config_from_dict

    record = store.get_run(run)
    if record is None:
        raise RefbenchError(f"no run named {run!r} in {store.path}; `refbench runs` lists them")
    checkpoint = Path(record["run_dir"]) / "checkpoint"
    whole, sharded = (checkpoint / "policy.safetensors").is_file(), (checkpoint / "pytorch_model_fsdp_0").is_dir()
    if not (whole or sharded):
        raise RefbenchError(f"run {run!r} has no checkpoint yet (status {record['status']}); train it first")
    return config_from_dict(record["config"]), checkpoint


def _build_models(config, checkpoint: Path, device: str):
    """Backend and model set holding the run's last policy and reference (from its checkpoint)."""
    from ..training.backends import load_backend
    from ..training.modelset import build_model_set

    backend = load_backend(config.model, device=device)
    reference_mode = "sync" if config.method.reference == "sync" else "fixed"
    models = build_model_set(
        backend.denoiser,
        reference_mode=reference_mode,
        lora_rank=config.model.lora_rank,
        lora_targets=backend.lora_targets,
    )
    policy, reference = _checkpoint_weights(checkpoint, reference_mode == "sync", lora=config.model.lora_rank > 0)
    models.load_policy_state(policy)
    if reference is not None:
        models.load_reference_state(reference)
    models.policy_module.eval()
    return backend, models, reference_mode


def _checkpoint_weights(checkpoint: Path, syncs: bool, *, lora: bool):
    """The checkpoint's policy and (syncing) reference weights, as the model set loads them; a
    sharded checkpoint (FSDP) is read whole in this one process."""
    from safetensors.torch import load_file

    from ..training.checkpoint import SHARDED_FOLDERS, read_sharded_weights
    from ..training.modelset import POLICY, REFERENCE

    if (checkpoint / "policy.safetensors").is_file():
        reference = checkpoint / "reference.safetensors"
        return load_file(str(checkpoint / "policy.safetensors")), (
            load_file(str(reference)) if syncs and reference.is_file() else None
        )
    weights = read_sharded_weights(checkpoint, "policy")
    if lora:  # the whole denoiser: both adapters are in it
        policy = {k: v for k, v in weights.items() if f".{POLICY}." in k}
        return policy, ({k: v for k, v in weights.items() if f".{REFERENCE}." in k} if syncs else None)
    syncing = syncs and (checkpoint / SHARDED_FOLDERS["reference"]).is_dir()
    return weights, (read_sharded_weights(checkpoint, "reference") if syncing else None)


def pair_draws(
    seed: int, pair_index: int, intervals: int, bounds: torch.Tensor, shape
) -> tuple[torch.Tensor, torch.Tensor]:
    """The K timesteps (one uniform draw inside each interval) and K noises of one pair: a function
    of (seed, pair) alone, so the result does not depend on the batch size."""
    from ..training.seeding import step_generator

    generator = step_generator(seed, "timestep-analysis", pair_index)
    low, high = bounds[:, 0], bounds[:, 1]
    timesteps = low + (torch.rand(intervals, generator=generator, dtype=torch.float64) * (high - low)).long()
    return timesteps, torch.randn((intervals, *shape), generator=generator)


@torch.no_grad()
def evaluate_errors(
    backend,
    models,
    pairs,
    *,
    which: tuple[str, ...],
    intervals: int,
    seed: int,
    batch_pairs: int,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Errors of each named model on every (pair, interval): chunks of pairs are encoded once and
    evaluated in all K intervals in one batch of 2 x chunk x K images per model.

    Returns per model and for ``interval`` / ``timesteps``, tensors of shape (pairs x K,) in
    pair-major order; the model entries are (2, pairs x K): winners then losers.
    """
    from tqdm.auto import tqdm

    from ..method.interval_stats import interval_bounds
    from ..training.data import PreferencePairs

    device = backend.device
    bounds = torch.tensor(interval_bounds(backend.num_train_timesteps, intervals))
    chunk = max(1, batch_pairs // intervals)
    errors = {name: [] for name in which}
    interval_index, timestep_list = [], []
    bar = tqdm(total=len(pairs), desc="timestep analysis", unit="pair", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(pairs), chunk):
        indices = range(start, min(start + chunk, len(pairs)))
        usable = [(i, item) for i, item in ((i, pairs[i]) for i in indices) if item is not None]
        bar.update(len(indices))
        if not usable:
            continue
        captions, winners, losers = PreferencePairs.collate([item for _, item in usable])
        x0 = backend.encode_images(winners), backend.encode_images(losers)
        cond = backend.encode_text(captions)
        draws = [pair_draws(seed, i, intervals, bounds, x0[0].shape[1:]) for i, _ in usable]
        timesteps = torch.cat([t for t, _ in draws]).to(device)
        noise = torch.cat([e for _, e in draws]).to(device)
        expand = torch.arange(len(usable), device=device).repeat_interleave(intervals)
        x0_all = torch.cat([x0[0][expand], x0[1][expand]])
        noise_all, timesteps_all = noise.repeat(2, *[1] * (noise.dim() - 1)), timesteps.repeat(2)
        cond_all = cond.select(expand).repeat(2)
        x_t = backend.add_noise(x0_all, noise_all, timesteps_all)
        target = backend.target(x0_all, noise_all, timesteps_all)
        for name in which:
            with models.use(name) as module:
                errors[name].append(
                    backend.errors(module, x_t, timesteps_all, cond_all, target).float().cpu().view(2, -1)
                )
        interval_index.append(torch.arange(intervals).repeat(len(usable)))
        timestep_list.append(timesteps.cpu())
    bar.close()
    if not interval_index:
        raise RefbenchError("no readable validation pairs for the timestep analysis")
    out = {name: torch.cat(chunks, dim=1) for name, chunks in errors.items()}
    out["interval"], out["timesteps"] = torch.cat(interval_index), torch.cat(timestep_list)
    return out


def _sigma_range(backend, t_low: int, t_high: int) -> dict:
    """A flow model's interval in noise levels: s(t_low) to s(t_high - 1) (method.flow); DDPM: none."""
    sigmas = getattr(backend, "sigmas", None)
    if sigmas is None:
        return {"sigma_low": None, "sigma_high": None}
    return {"sigma_low": float(sigmas[t_low]), "sigma_high": float(sigmas[t_high - 1])}


def analyse_run(
    run: str,
    *,
    db: Path,
    against: str = "reference",
    num_pairs: int | None = None,
    intervals: int = DEFAULT_INTERVALS,
    batch_pairs: int = 128,
    seed: int = 0,
    data: str | None = None,
    progress: bool = True,
):
    """Run the analysis, store it in ``timestep_stats`` (replacing an earlier one) and return its rows.

    The pairs are the validation split of the run's data (the toy world's validation pairs, or a
    hub dataset's ``validation`` split), or ``data``: a parquet file or folder, or a hub id."""
    import pandas as pd

    from ..method.interval_stats import interval_statistics
    from ..method.timesteps import reward_scale
    from ..training.backends import backend_class
    from ..training.data import load_preference_pairs
    from ..training.modelset import POLICY, REFERENCE

    if against not in ("reference", "init"):
        raise RefbenchError(f"--against must be 'reference' or 'init'; got {against!r}")
    if intervals < 1 or batch_pairs < 1 or (num_pairs is not None and num_pairs < 1):
        raise RefbenchError("--intervals, --pairs and --batch must be >= 1")
    store = Store(db, create=False)  # it reads what an earlier command wrote: a missing store is a mistyped --db
    config, checkpoint = _load_run(store, run)
    num_pairs = num_pairs or backend_class(config.model.kind).analysis_pairs
    device = "cuda" if torch.cuda.is_available() else "cpu"
    backend, models, reference_mode = _build_models(config, checkpoint, device)
    if intervals > backend.num_train_timesteps:
        raise RefbenchError(f"--intervals must be at most {backend.num_train_timesteps}")
    source = {"source": data} if data else {}
    validation = dataclasses.replace(
        config, data=dataclasses.replace(config.data, split="validation", max_pairs=num_pairs, **source)
    )
    pairs = load_preference_pairs(validation)
    # With a fixed reference (or --against init) the reference is the initial model: one pass fewer.
    reference = REFERENCE if (against == "reference" and reference_mode == "sync") else "initial"
    which = (POLICY, reference) if reference == "initial" else (POLICY, reference, "initial")
    errors = evaluate_errors(
        backend, models, pairs, which=which, intervals=intervals, seed=seed, batch_pairs=batch_pairs, progress=progress
    )
    stats = interval_statistics(
        interval=errors["interval"],
        timesteps=errors["timesteps"],
        model_w=errors[POLICY][0],
        model_l=errors[POLICY][1],
        ref_w=errors[reference][0],
        ref_l=errors[reference][1],
        init_w=errors["initial"][0],
        lambdas=reward_scale("inv-sqrt-snr", backend.alphas_cumprod),
        num_train_timesteps=backend.num_train_timesteps,
        intervals=intervals,
    )
    rows = [
        {"run": run, "analysis": against, **dataclasses.asdict(s), **_sigma_range(backend, s.t_low, s.t_high)}
        for s in stats
    ]
    store.delete("timestep_stats", run=run, analysis=against)
    store.upsert("timestep_stats", rows)
    return pd.DataFrame(rows)
