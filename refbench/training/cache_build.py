"""Build the on-disk latent cache (``refbench cache-latents``, or on first use of ``data.latent_cache``).

The work is split across accelerate processes by chunk (chunk c goes to process c mod P), each
writing its own rows of the shared memory-mapped arrays that the main process allocated.
Images are decoded by the DataLoader workers of ``data.num_workers``. A chunk's status is
written after its arrays, so a killed build resumes with the chunks it had not finished.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig
from ..errors import RefbenchError
from .backends import backend_class, load_backend
from .latent_cache import TEXT_PREFIX, CacheMismatch, describe_difference

__all__ = ["cache_fingerprint", "build_latent_cache", "cache_config_text"]

CHUNK_PAIRS = 64
CHUNK_CAPTIONS = 256


def cache_fingerprint(config: RunConfig, data_fingerprint: str) -> dict:
    """Everything the cache's contents depend on, as strings (compared key by key)."""
    model = config.model
    return {
        "model": model.kind,
        **backend_class(model.kind).encoder_fingerprint(model),
        "vae_dtype": "fp32" if model.vae_fp32 else model.mixed_precision,
        "resolution": str(model.resolution),
        "crop": "center",
        "flip": "off",
        "dtype": config.data.latent_dtype,
        "data": data_fingerprint,
    }


def cache_config_text(config: RunConfig, folder: Path) -> str:
    """A config file (TOML) that trains from the cache in ``folder``: the settings the cache was made
    with, and ``random_flip = false`` (the cache holds unflipped images; the SD presets flip at random,
    as the official recipe does, and ``data.random_flip`` with ``data.latent_cache`` is refused)."""
    from ..model_kinds import MODEL_KINDS

    model, data = config.model, config.data
    model_fields = {"kind": model.kind, "pretrained": model.pretrained, "resolution": model.resolution}
    model_fields.update(mixed_precision=model.mixed_precision, vae_fp32=model.vae_fp32, vae=model.vae)
    if MODEL_KINDS[model.kind].t5:
        model_fields["t5"] = model.t5
    data_fields = {"source": data.source, "split": data.split, "max_pairs": data.max_pairs}
    data_fields.update(exclude_prompts=data.exclude_prompts, latent_cache=str(folder), latent_dtype=data.latent_dtype)
    data_fields["random_flip"] = False
    lines = []
    for table, fields in (("model", model_fields), ("data", data_fields)):
        lines.append(f"[{table}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in fields.items() if value is not None]
    lines[-1] += "  # the cache holds unflipped images: no random flip (the official recipe flips)"
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string


def build_latent_cache(config: RunConfig, folder: Path, *, accelerator=None, progress: bool = True) -> Path:
    """Build (or finish) the cache of ``config``'s data and model in ``folder``; returns it."""
    from accelerate import Accelerator

    from .data import load_preference_pairs

    acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    folder = Path(folder)
    pairs = load_preference_pairs(config)
    fingerprint = cache_fingerprint(config, pairs.fingerprint)
    meta_file = folder / "meta.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if meta.get("fingerprint") != fingerprint:
            raise CacheMismatch(
                f"{folder} holds a latent cache made with other settings: "
                f"{describe_difference(meta.get('fingerprint', {}), fingerprint)}; pick another --out"
            )
        if meta.get("complete"):
            return folder
    backend = load_backend(config.model, device=str(acc.device), denoiser=False)
    if acc.is_main_process and not meta_file.is_file():
        _allocate(folder, pairs, backend, fingerprint, config.data.latent_dtype)
    acc.wait_for_everyone()
    _fill(folder, pairs, backend, config, acc, progress)
    acc.wait_for_everyone()
    if acc.is_main_process:
        meta = json.loads(meta_file.read_text())
        status = np.load(folder / "status.npy", mmap_mode="r")
        meta.update(complete=True, unreadable_pairs=int((np.asarray(status) == 2).sum()))
        meta_file.write_text(json.dumps(meta, indent=1))
    acc.wait_for_everyone()
    return folder


def _captions(pairs) -> tuple[list[str], np.ndarray]:
    """Unique captions (the empty prompt first) and each pair's row among them, read by a scan of
    the caption column (rows are in source order)."""
    unique, index_of = [""], {"": 0}
    caption_index = np.zeros(len(pairs), dtype=np.int32)
    position = 0
    for offset, captions, _ in pairs.source.scan_labels(65_536):
        end = offset + len(captions)
        while position < len(pairs) and pairs.rows[position] < end:
            caption = captions[int(pairs.rows[position]) - offset]
            if caption not in index_of:
                index_of[caption] = len(unique)
                unique.append(caption)
            caption_index[position] = index_of[caption]
            position += 1
    return unique, caption_index


def _allocate(folder: Path, pairs, backend, fingerprint: dict, dtype: str) -> None:
    from numpy.lib.format import open_memmap

    folder.mkdir(parents=True, exist_ok=True)
    unique, caption_index = _captions(pairs)
    probe_index = next((i for i in range(min(len(pairs), 256)) if pairs[i] is not None), None)
    if probe_index is None:
        raise RefbenchError("none of the first 256 usable pairs has readable images; nothing to cache")
    _, winner, _ = pairs[probe_index]
    with torch.no_grad():
        latent_shape = tuple(backend.encode_images(np.array(winner[None])).shape[1:])
        empty = backend.encode_text([""])
    open_memmap(folder / "latents.npy", mode="w+", dtype=dtype, shape=(len(pairs), 2, *latent_shape)).flush()
    open_memmap(folder / "status.npy", mode="w+", dtype=np.uint8, shape=(len(pairs),)).flush()
    np.save(folder / "caption_index.npy", caption_index)
    (folder / "captions.json").write_text(json.dumps(unique))
    open_memmap(
        folder / "text_hidden.npy", mode="w+", dtype=dtype, shape=(len(unique), *empty.hidden.shape[1:])
    ).flush()
    for key, value in empty.added.items():
        open_memmap(
            folder / f"{TEXT_PREFIX}{key}.npy", mode="w+", dtype=dtype, shape=(len(unique), *value.shape[1:])
        ).flush()
    open_memmap(folder / "text_status.npy", mode="w+", dtype=np.uint8, shape=(len(unique),)).flush()
    meta = {
        "fingerprint": fingerprint,
        "pairs": len(pairs),
        "captions": len(unique),
        "latent_shape": list(latent_shape),
        "added_keys": sorted(empty.added),
        "complete": False,
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def _fill(folder: Path, pairs, backend, config: RunConfig, acc, progress: bool) -> None:
    from tqdm.auto import tqdm

    from .batches import decoded_pair_loader

    latents = np.load(folder / "latents.npy", mmap_mode="r+")
    status = np.load(folder / "status.npy", mmap_mode="r+")
    rank, processes = acc.process_index, acc.num_processes
    chunks = [
        c
        for c in range(rank, -(-len(pairs) // CHUNK_PAIRS), processes)
        if not np.asarray(status[c * CHUNK_PAIRS : (c + 1) * CHUNK_PAIRS]).all()
    ]
    keys = [list(range(c * CHUNK_PAIRS, min(len(pairs), (c + 1) * CHUNK_PAIRS))) for c in chunks]
    bar = tqdm(total=len(keys), desc="latents", unit="chunk", disable=not (progress and acc.is_main_process))
    for batch in decoded_pair_loader(pairs, keys, num_workers=config.data.resolved_num_workers(processes)):
        indices = np.asarray(batch["indices"], dtype=np.int64)
        if batch["winners"] is not None:
            images = np.concatenate([batch["winners"].numpy(), batch["losers"].numpy()])
            with torch.no_grad():
                encoded = backend.encode_images(images).cpu().numpy()
            count = len(indices)
            latents[indices] = np.stack([encoded[:count], encoded[count:]], axis=1).astype(latents.dtype)
            latents.flush()
            status[indices] = 1
        status[np.asarray(batch["unreadable"], dtype=np.int64)] = 2
        status.flush()
        bar.update(1)
    bar.close()
    _fill_text(folder, backend, rank, processes)


def _fill_text(folder: Path, backend, rank: int, processes: int) -> None:
    captions = json.loads((folder / "captions.json").read_text())
    hidden = np.load(folder / "text_hidden.npy", mmap_mode="r+")
    text_status = np.load(folder / "text_status.npy", mmap_mode="r+")
    added = {
        path.stem[len(TEXT_PREFIX) :]: np.load(path, mmap_mode="r+")
        for path in folder.glob(f"{TEXT_PREFIX}*.npy")
        if path.stem not in ("text_hidden", "text_status")
    }
    for chunk in range(rank, -(-len(captions) // CHUNK_CAPTIONS), processes):
        rows = slice(chunk * CHUNK_CAPTIONS, min(len(captions), (chunk + 1) * CHUNK_CAPTIONS))
        if np.asarray(text_status[rows]).all():
            continue
        with torch.no_grad():
            cond = backend.encode_text(captions[rows])
        hidden[rows] = cond.hidden.cpu().numpy().astype(hidden.dtype)
        for key, array in added.items():
            array[rows] = cond.added[key].cpu().numpy().astype(array.dtype)
            array.flush()
        hidden.flush()
        text_status[rows] = 1
        text_status.flush()
