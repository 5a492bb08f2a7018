"""`refbench score`: fill ``scores`` for a run's samples with metrics from the registry.

Only (sample, metric) pairs without a score are computed, so scoring resumes and a
new metric adds its column without redoing the others.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import RefbenchError
from ..store import Store


def resolve_metrics(names: str) -> list[str]:
    """``all``: the toy oracle metrics; ``reward-models``: the paper's five (need their weights);
    otherwise a comma-separated list, each ``name`` or ``name=source``."""
    from .metrics import get_metric, list_metrics

    if names == "all":
        return list_metrics(kind="oracle")
    if names == "reward-models":
        return list_metrics(kind="reward-model")
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    for name in chosen:
        try:
            get_metric(name)
        except (KeyError, ValueError) as exc:
            raise RefbenchError(str(exc)) from None
    return chosen


def score(run: str, *, metrics: str = "all", db: Path, batch_size: int = 512, progress: bool = True) -> dict[str, int]:
    """Score every unscored sample of ``run``; returns the number of new scores per metric."""
    from tqdm.auto import tqdm

    from ..training.data import decode_image
    from .metrics import get_metric

    store = Store(db, create=False)  # it reads what an earlier command wrote: a missing store is a mistyped --db
    names = resolve_metrics(metrics)
    samples = store.query("SELECT sample_id, prompt, image_path FROM samples WHERE run = ? ORDER BY sample_id", [run])
    if samples.empty:
        raise RefbenchError(
            f"run {run!r} has no samples in {db}; run `refbench generate {run} --prompts toy-test` first"
        )
    added = {}
    for requested in names:
        metric = get_metric(requested)
        name = metric.name  # stored without the source, so "pickscore=/path" fills the pickscore column
        source = getattr(metric, "source", None)  # reward models have one; the toy oracles none
        if source is not None:
            sha256 = record_source(store, name, source, db)
        else:
            source, sha256 = builtin_source(metric)
        scored = set(
            store.query(
                "SELECT s.sample_id FROM scores s JOIN samples m USING (sample_id) WHERE m.run = ? AND s.metric = ?",
                [run, name],
            )["sample_id"]
        )
        todo = samples[~samples["sample_id"].isin(scored)]
        bar = tqdm(total=len(todo), desc=f"score {name}", unit="img", disable=not progress or todo.empty)
        for start in range(0, len(todo), batch_size):
            chunk = todo.iloc[start : start + batch_size]
            images = []
            for path in chunk["image_path"]:
                try:
                    images.append(decode_image(Path(path).read_bytes()))
                except (OSError, ValueError) as exc:
                    raise RefbenchError(f"cannot read sample image {path}: {exc}") from None
            values = metric(np.stack(images), list(chunk["prompt"]))
            store.upsert(
                "scores",
                [
                    {"sample_id": sid, "metric": name, "value": float(v), "source": source, "weights_sha256": sha256}
                    for sid, v in zip(chunk["sample_id"], values)
                ],
            )
            bar.update(len(chunk))
        bar.close()
        added[name] = len(todo)
    return added


def builtin_source(metric) -> tuple[str, str]:
    """A built-in metric (the toy oracles) has no weights: its scores are pinned to the code that
    computes them, the sha256 of the file defining the function (a changed oracle is a new source)."""
    import hashlib
    import inspect

    code = getattr(metric, "fn", metric)  # a registered Metric, or any callable standing in for one
    if not (inspect.isfunction(code) or inspect.isclass(code)):
        code = type(code)
    try:
        path = Path(inspect.getsourcefile(code))
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except (TypeError, OSError):  # defined where no file holds it (an interactive session): not pinned
        digest = None
    return f"builtin:{code.__module__}", digest


def record_source(store: Store, metric: str, source: str, db: Path) -> str:
    """Record which checkpoint makes ``metric``'s scores in this store (its source and the sha256
    of its weight files); scores from another checkpoint would be mixed in one column: refused."""
    from ..store import now
    from .weights import digest, weight_files

    files = weight_files(source)
    sha256, size = digest(files), sum(f.stat().st_size for f in files)
    known = store.query("SELECT source, weights_sha256 FROM metric_sources WHERE metric = ?", [metric])
    if not known.empty and (known["source"][0], known["weights_sha256"][0]) != (source, sha256):
        raise RefbenchError(
            f"{metric} scores in {db} come from {known['source'][0]} (sha256 "
            f"{str(known['weights_sha256'][0])[:12]}), not {source} (sha256 {str(sha256)[:12]}); "
            f"score with that checkpoint, or use another --db"
        )
    store.upsert(
        "metric_sources",
        [{"metric": metric, "source": source, "weights_sha256": sha256, "size_bytes": size, "recorded_at": now()}],
    )
    return sha256
