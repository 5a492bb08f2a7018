"""`refbench make-pairs`: on-policy preference pairs from AI feedback.

A model (a preset's or a folder's base model, a trained run, or a LoRA adapter) samples ``K``
images per prompt (noise fixed by prompt and seed, seeds ``S .. S+K-1``), a registered reward
model scores them, and the pairs are written to ``OUT/pairs.parquet`` in the Pick-a-Pic v2
schema (``caption``, ``jpg_0``, ``jpg_1``, ``label_0``), so that ``refbench train --data OUT``
trains on them. The protocol and the reward's checkpoint go with the pairs, in the file's
key-value metadata (``refbench.made_pairs``) and in the store (``pair_sets``,
``pair_candidates``, ``made_pairs``).

Resumable: prompts are done in chunks; each finished chunk is a part file plus a marker in
``OUT/.make-pairs/`` (written to a temporary name, then renamed), and a rerun skips the prompts
of every marked chunk. ``OUT/pairs.parquet`` appears only at the end, by a rename: a folder
without it holds no ``*.parquet`` file, so nothing reads a half-made set as complete.
"""

from __future__ import annotations

import io
import json
import os
import signal
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from ..errors import RefbenchError
from ..store import Store, now

__all__ = ["Pair", "select_pairs", "make_pairs", "PAIRS_FILE", "METADATA_KEY", "WORK_FOLDER"]

PAIRS_FILE = "pairs.parquet"
WORK_FOLDER = ".make-pairs"  # protocol.json, part files and markers of a run in progress
METADATA_KEY = "refbench.made_pairs"
PART_SUFFIX = ".part"  # not *.parquet: `train --data OUT` never reads a part
# Test hook: SIGKILL this process after N chunks (a real kill at a chosen point, for the resume test).
KILL_AFTER_ENV = "REFBENCH_MAKE_PAIRS_KILL_AFTER"
# What must agree between a run and the folder it resumes.
PROTOCOL_KEYS = (
    "model",
    "model_kind",
    "pretrained",
    "policy",
    "prompt_set",
    "prompt_set_sha256",
    "num_prompts",
    "reward",
    "reward_source",
    "reward_sha256",
    "per_prompt",
    "seed",
    "steps",
    "guidance_scale",
    "resolution",
    "selection",
    "min_gap",
    "tie_tolerance",
)


@dataclass(frozen=True)
class Pair:
    """Candidates ``i`` (image 0) and ``j`` (image 1) of one prompt, ``i < j``, and ``label_0``:
    1 if image 0 scored higher, 0 if image 1 did, 0.5 (a tie) if their gap is within the tolerance."""

    i: int
    j: int
    label_0: float


def _label(score_i: float, score_j: float, tie_tolerance: float) -> float:
    gap = score_i - score_j
    if abs(gap) <= tie_tolerance:
        return 0.5
    return 1.0 if gap > 0 else 0.0


def select_pairs(scores, *, min_gap: float | None = None, tie_tolerance: float = 0.0) -> list[Pair]:
    """The pairs among one prompt's candidates (scored ``scores``, in seed order).

    Without ``min_gap``: one pair, the best against the worst (the first of equal bests and the
    last of equal worsts, so that all-equal scores give the pair (first, last), a tie). With
    ``min_gap``: every pair whose score gap exceeds it (``|s_i - s_j| > min_gap``). Image 0 is the
    candidate of the lower seed; a gap of at most ``tie_tolerance`` is a tie (label 0.5), which
    with ``min_gap`` only happens when ``min_gap < tie_tolerance``."""
    values = [float(s) for s in scores]
    if len(values) < 2:
        raise ValueError("select_pairs needs at least two candidates")
    if min_gap is None:
        best = max(range(len(values)), key=lambda k: (values[k], -k))
        worst = min(range(len(values)), key=lambda k: (values[k], -k))
        i, j = sorted((best, worst))
        return [Pair(i, j, _label(values[i], values[j], tie_tolerance))]
    return [
        Pair(i, j, _label(values[i], values[j], tie_tolerance))
        for i, j in combinations(range(len(values)), 2)
        if abs(values[i] - values[j]) > min_gap
    ]


@dataclass
class _Policy:
    """Which model samples, and how to build its sampler."""

    spec: str
    config: object
    run: str | None
    policy: str | None  # the run's final folder or the LoRA folder; None for a base model

    def sampler(self):
        from dataclasses import replace

        from ..training.backends import backend_class

        backend = backend_class(self.config.model.kind)
        backend.check_source(self.config.model)
        model, final = self.config.model, None
        if self.policy is not None:
            final = Path(self.policy)
            if not final.is_dir():
                raise RefbenchError(f"run {self.run!r} has no final model ({final} is missing); finish it first")
            if self.run is None:  # a LoRA adapter on the base model
                model = replace(model, lora_rank=max(1, model.lora_rank))
        return backend.sampler(model, final)


def resolve_policy(
    spec: str, store: Store, *, preset: str, base_model: str | None, resolution: int | None = None
) -> _Policy:
    """``--model``: a run name in the store, ``base`` (the preset's model), a LoRA folder (adapting
    ``base_model`` or the preset's model), or a hub id / local model folder. ``resolution``
    overrides the model's sampling resolution."""
    from dataclasses import replace

    from ..config import load_config
    from .generate import BASE, run_config

    if spec != BASE and store.get_run(spec) is not None:
        config, record = run_config(spec, store)
        policy = _Policy(spec, config, spec, str(Path(record["run_dir"]) / "final"))
    else:
        path = Path(spec).expanduser()
        if path.is_dir() and any(path.glob("*lora*.safetensors")):
            config = load_config(preset=preset, overrides={"model": {"pretrained": base_model}})
            policy = _Policy(spec, config, None, str(path.resolve()))
        else:
            model = None if spec == BASE else (str(path.resolve()) if path.exists() else spec)
            policy = _Policy(spec, load_config(preset=preset, overrides={"model": {"pretrained": model}}), None, None)
    if resolution is not None:
        policy.config = replace(policy.config, model=replace(policy.config.model, resolution=resolution))
    return policy


def _reward(reward: str, store: Store, db: Path) -> tuple[object, str, str | None]:
    """(metric, source, sha256) of the reward model, loaded now: one line if it cannot be."""
    from .metrics import get_metric, load_scorer
    from .score import builtin_source, record_source

    try:
        metric = get_metric(reward)
    except (KeyError, ValueError) as exc:
        raise RefbenchError(str(exc)) from None
    if metric.source is None:
        source, sha256 = builtin_source(metric)
        return metric, source, sha256
    load_scorer(metric.name, metric.source)  # MetricLoadError: a RefbenchError, one line
    return metric, metric.source, record_source(store, metric.name, metric.source, db)


def _write_atomic(path: Path, write) -> None:
    """``write(tmp)`` then rename: a reader sees the whole file or none."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def _png(image) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _check_folder(out: Path, protocol: dict) -> bool:
    """Whether ``out`` already holds the complete set of this protocol; refuses a folder made under
    another protocol, or one that is not a make-pairs folder."""
    saved = out / WORK_FOLDER / "protocol.json"
    if saved.is_file():
        old = json.loads(saved.read_text())
        differ = [k for k in PROTOCOL_KEYS if old.get(k) != protocol.get(k)]
        if differ:
            shown = ", ".join(f"{k} {old.get(k)!r} (asked {protocol.get(k)!r})" for k in differ[:3])
            raise RefbenchError(f"{out} holds pairs made under another protocol: {shown}; use another --out")
        return (out / PAIRS_FILE).is_file()
    if out.exists() and any(out.iterdir()):
        raise RefbenchError(f"{out} exists and was not made by make-pairs; use an empty or new --out")
    return False


def _done_chunks(work: Path) -> list[dict]:
    chunks = []
    for marker in sorted(work.glob("chunk-*.json")):
        record = json.loads(marker.read_text())
        if (work / record["part"]).is_file():
            chunks.append(record)
    return chunks


def make_pairs(
    model: str,
    *,
    prompt_set: str,
    reward: str,
    per_prompt: int,
    out: Path,
    db: Path,
    min_gap: float | None = None,
    tie_tolerance: float = 0.0,
    seed: int = 0,
    num_prompts: int | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    preset: str = "toy",
    base_model: str | None = None,
    resolution: int | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> dict:
    """Make (or finish) the pair set in ``out``; returns its summary (out, pairs, ties, prompts, already_complete).
    A prompt listed twice in the set is made once (pairs are per prompt text)."""
    from ..training.backends import backend_class
    from ..training.backends.samplers import DEFAULT_STEPS
    from .generate import prompt_set_fingerprint, prompt_texts

    if per_prompt < 2:
        raise RefbenchError("--per-prompt must be at least 2 (a pair needs two images)")
    if (min_gap is not None and min_gap < 0) or tie_tolerance < 0:
        raise RefbenchError("--min-gap and --tie-tolerance must be >= 0")
    if num_prompts is not None and num_prompts < 1:
        raise RefbenchError("--num-prompts must be >= 1")
    out = Path(out).expanduser().resolve()
    store = Store(db)
    metric, source, sha256 = _reward(reward, store, db)  # before any generation
    every_prompt = prompt_texts(prompt_set)
    prompts = list(dict.fromkeys(every_prompt[:num_prompts]))
    policy = resolve_policy(model, store, preset=preset, base_model=base_model, resolution=resolution)
    kind = policy.config.model.kind
    protocol = {
        "model": model,
        "model_kind": kind,
        "pretrained": policy.config.model.pretrained,
        "policy": policy.policy,
        "prompt_set": prompt_set,
        "prompt_set_sha256": prompt_set_fingerprint(every_prompt),
        "num_prompts": len(prompts),
        "reward": metric.name,
        "reward_source": source,
        "reward_sha256": sha256,
        "per_prompt": per_prompt,
        "seed": seed,
        "seeds": list(range(seed, seed + per_prompt)),
        "steps": DEFAULT_STEPS if steps is None else steps,
        "guidance_scale": backend_class(kind).default_guidance if guidance_scale is None else guidance_scale,
        "resolution": policy.config.model.resolution,
        "selection": "best-vs-worst" if min_gap is None else "min-gap",
        "min_gap": min_gap,
        "tie_tolerance": tie_tolerance,
    }
    if _check_folder(out, protocol):  # (a kill after the rename left the store's row running: complete it)
        meta = read_metadata(out / PAIRS_FILE)
        done = {k: meta.get(k) for k in ("sampler", "num_pairs", "num_ties")} | {"prompts_done": meta["num_prompts"]}
        store.upsert("pair_sets", [{k: meta.get(k) for k in PROTOCOL_KEYS} | done | {"out": str(out)} | _stamps(meta)])
        return {**_summary(out), "already_complete": True}
    work = out / WORK_FOLDER
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "protocol.json").is_file():
        first = protocol | {"created_at": now().isoformat()}
        _write_atomic(work / "protocol.json", lambda p: p.write_text(json.dumps(first, indent=1)))
    protocol["created_at"] = json.loads((work / "protocol.json").read_text())["created_at"]  # of the first start
    set_row = {k: protocol[k] for k in PROTOCOL_KEYS} | {
        "out": str(out),
        "status": "running",
        "created_at": protocol["created_at"],
    }
    chunks = _done_chunks(work)
    done = {p for c in chunks for p in c["prompts"]}
    todo = [p for p in prompts if p not in done]
    for chunk in chunks:  # a kill between a chunk's marker and its rows: the rows again (idempotent)
        _store_chunk(store, out, chunk)
    store.upsert("pair_sets", [set_row | {"prompts_done": len(done)}])
    if todo:
        _run_chunks(policy, store, metric, protocol, work, out, todo, len(done), batch_size, progress, set_row)
    return _finish(store, out, protocol, set_row)


def _run_chunks(policy, store, metric, protocol, work, out, todo, done, batch_size, progress, set_row) -> None:
    import numpy as np
    from tqdm.auto import tqdm

    k = protocol["per_prompt"]
    per_chunk = max(1, batch_size // k)
    sampler = policy.sampler()
    protocol.setdefault("sampler", sampler.name)
    bar = tqdm(
        total=done + len(todo), initial=done, desc=f"make-pairs {metric.name}", unit="prompt", disable=not progress
    )
    kill_after = int(os.environ.get(KILL_AFTER_ENV, "0"))
    for number, start in enumerate(range(0, len(todo), per_chunk), start=1):
        chunk_prompts = todo[start : start + per_chunk]
        wanted = [(p, s) for p in chunk_prompts for s in protocol["seeds"]]
        images = sampler(
            [p for p, _ in wanted],
            [s for _, s in wanted],
            guidance_scale=protocol["guidance_scale"],
            steps=protocol["steps"],
        )
        images = np.asarray(images)
        values = metric(images, [p for p, _ in wanted])
        record = _write_chunk(work, chunk_prompts, images, values, protocol, sampler.name)
        _store_chunk(store, out, record)
        done += len(chunk_prompts)
        store.upsert("pair_sets", [set_row | {"prompts_done": done, "sampler": sampler.name}])
        bar.update(len(chunk_prompts))
        if kill_after and number >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    bar.close()


def _write_chunk(work: Path, prompts: list[str], images, values, protocol: dict, sampler: str) -> dict:
    """A chunk's pairs as a part file, then its marker (prompts, every candidate's score, pairs)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    k, seeds = protocol["per_prompt"], protocol["seeds"]
    rows, candidates = [], []
    for index, prompt in enumerate(prompts):
        scores = [float(v) for v in values[index * k : (index + 1) * k]]
        candidates.append({"prompt": prompt, "scores": scores})
        for pair in select_pairs(scores, min_gap=protocol["min_gap"], tie_tolerance=protocol["tie_tolerance"]):
            rows.append(
                {
                    "caption": prompt,
                    "jpg_0": _png(images[index * k + pair.i]),
                    "jpg_1": _png(images[index * k + pair.j]),
                    "label_0": pair.label_0,
                    "seed_0": seeds[pair.i],
                    "seed_1": seeds[pair.j],
                    "score_0": scores[pair.i],
                    "score_1": scores[pair.j],
                }
            )
    name = f"chunk-{_chunk_number(work):06d}"
    part = name + ".parquet" + PART_SUFFIX
    table = pa.Table.from_pylist(rows, schema=_part_schema())
    _write_atomic(work / part, lambda p: pq.write_table(table, p))
    record = {"part": part, "prompts": prompts, "candidates": candidates, "seeds": seeds, "sampler": sampler}
    record["height"], record["width"] = int(images.shape[1]), int(images.shape[2])
    _write_atomic(work / f"{name}.json", lambda p: p.write_text(json.dumps(record)))
    return record


def _chunk_number(work: Path) -> int:
    return len(list(work.glob("chunk-*.json")))


def _part_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("caption", pa.string()),
            ("jpg_0", pa.binary()),
            ("jpg_1", pa.binary()),
            ("label_0", pa.float64()),
            ("seed_0", pa.int64()),
            ("seed_1", pa.int64()),
            ("score_0", pa.float64()),
            ("score_1", pa.float64()),
        ]
    )


def _store_chunk(store: Store, out: Path, record: dict) -> None:
    """A chunk's candidate scores and pairs, as rows (upserts: writing them twice changes nothing)."""
    import pyarrow.parquet as pq

    seeds = record["seeds"]
    store.upsert(
        "pair_candidates",
        [
            {"out": str(out), "prompt": c["prompt"], "seed": seed, "score": score}
            for c in record["candidates"]
            for seed, score in zip(seeds, c["scores"])
        ],
    )
    columns = ["caption", "seed_0", "seed_1", "score_0", "score_1", "label_0"]
    rows = pq.read_table(out / WORK_FOLDER / record["part"], columns=columns).to_pylist()
    store.upsert("made_pairs", [{"out": str(out), "prompt": row.pop("caption"), **row} for row in rows])


def _finish(store: Store, out: Path, protocol: dict, set_row: dict) -> dict:
    """Join the parts in prompt order into OUT/pairs.parquet (metadata attached), by a rename; then
    the set is complete and the parts go."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    work = out / WORK_FOLDER
    chunks = _done_chunks(work)
    tables = [pq.read_table(work / c["part"]) for c in chunks]
    table = pa.concat_tables(tables) if tables else pa.Table.from_pylist([], schema=_part_schema())
    first = chunks[0] if chunks else {}
    meta = {k: protocol[k] for k in protocol} | {
        "sampler": first.get("sampler"),
        "height": first.get("height"),
        "width": first.get("width"),
        "scores": {c["prompt"]: c["scores"] for chunk in chunks for c in chunk["candidates"]},
        "num_pairs": table.num_rows,
        "num_ties": int(sum(1 for v in table.column("label_0").to_pylist() if v == 0.5)),
        "finished_at": now().isoformat(),
    }
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta, sort_keys=True)})
    _write_atomic(out / PAIRS_FILE, lambda p: pq.write_table(table, p, compression="zstd"))
    store.upsert(
        "pair_sets",
        [
            set_row
            | {
                "status": "complete",
                "sampler": meta["sampler"],
                "prompts_done": sum(len(c["prompts"]) for c in chunks),
                "num_pairs": meta["num_pairs"],
                "num_ties": meta["num_ties"],
                "finished_at": now(),
            }
        ],
    )
    for chunk in chunks:
        (work / chunk["part"]).unlink(missing_ok=True)
    return {**_summary(out), "already_complete": False}


def _stamps(meta: dict) -> dict:
    from datetime import datetime

    return {
        "status": "complete",
        "created_at": datetime.fromisoformat(meta["created_at"]),
        "finished_at": datetime.fromisoformat(meta["finished_at"]),
    }


def _summary(out: Path) -> dict:
    meta = read_metadata(out / PAIRS_FILE)
    return {"out": str(out), "pairs": meta["num_pairs"], "ties": meta["num_ties"], "prompts": meta["num_prompts"]}


def read_metadata(path: Path) -> dict:
    """The protocol, reward checkpoint and scores stored in a made pairs file."""
    import pyarrow.parquet as pq

    raw = pq.read_schema(path).metadata or {}
    if METADATA_KEY.encode() not in raw:
        raise RefbenchError(f"{path} was not written by make-pairs (no {METADATA_KEY} metadata)")
    return json.loads(raw[METADATA_KEY.encode()])
