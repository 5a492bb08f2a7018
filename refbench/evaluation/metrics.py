"""Metric registry (in the style of lm-evaluation-harness).

A metric scores a batch of images against their prompts:
``fn(images uint8 (N, H, W, 3), prompts list[str]) -> float64 (N,)``.
Metrics register themselves with ``@register_metric``. Built-in metrics (the toy
oracles in ``refbench.toy.oracle``, the real reward models in ``refbench.evaluation.rewards``)
are imported lazily on first lookup, so that importing this module stays cheap and
other modules can register further metrics without import cycles.

Reward models need weights. They register a *loader* with ``register_loader``:
``loader(source) -> fn``, where ``source`` is a hub id or a local path. Names may
carry a source, ``get_metric("pickscore=/local/folder")``; without one the default
source is used. Loading happens on the first call of the metric (so listing and
validating names never imports torch) and is cached per (name, source). A source
that cannot be loaded raises ``MetricLoadError`` with a one-line message.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import RefbenchError
from ..hub import SourceNotFound

MetricFn = Callable[[np.ndarray, list[str]], np.ndarray]

AGGREGATIONS: tuple[str, ...] = ("mean", "median")
# Modules whose import registers the built-in metrics.
_BUILTIN_MODULES: tuple[str, ...] = ("refbench.toy.oracle", "refbench.evaluation.rewards")
# A loader turns a weights source (hub id or local path) into a scoring function.
Loader = Callable[[str], MetricFn]


@dataclass(frozen=True)
class Metric:
    name: str
    fn: MetricFn
    higher_is_better: bool = True
    aggregation: str = "mean"
    kind: str = "oracle"  # "oracle" (toy, computed from pixels) or e.g. "reward-model"
    description: str = ""
    source: str | None = None  # weights source of a reward model (hub id or local path)

    def __call__(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        """Score a batch; checks shapes so that a bad metric fails loudly here."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"metric {self.name!r}: expected uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        if len(prompts) != len(images):
            raise ValueError(f"metric {self.name!r}: {len(images)} images but {len(prompts)} prompts")
        out = np.asarray(self.fn(images, list(prompts)), dtype=np.float64)
        if out.shape != (len(images),):
            raise ValueError(f"metric {self.name!r} returned shape {out.shape}, expected ({len(images)},)")
        return out

    def aggregate(self, scores: np.ndarray) -> float:
        scores = np.asarray(scores, dtype=np.float64)
        return float(np.median(scores) if self.aggregation == "median" else np.mean(scores))


class UnknownMetricError(KeyError, ValueError):
    """Unknown metric name; a KeyError and a ValueError, with a readable one-line str()."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class MetricLoadError(RefbenchError):
    """A reward model's weights (or its package) cannot be loaded; one-line message."""


@dataclass(frozen=True)
class _LoaderSpec:
    loader: Loader
    default_source: str
    higher_is_better: bool
    aggregation: str
    kind: str
    description: str
    # how to turn a source into a cache key (e.g. resolve local paths)
    normalise: Callable[[str], str] = field(default=lambda s: s)


_REGISTRY: dict[str, Metric] = {}
_LOADERS: dict[str, _LoaderSpec] = {}
_METRICS: dict[tuple[str, str], Metric] = {}  # (name, source) -> Metric with a lazy fn
_SCORERS: dict[tuple[str, str], MetricFn] = {}  # (name, source) -> loaded scoring fn
_LOCK = threading.RLock()  # loading is slow: never load the same weights twice
_builtin_loaded = False


def register_metric(
    name: str,
    *,
    higher_is_better: bool = True,
    aggregation: str = "mean",
    kind: str = "oracle",
    description: str = "",
) -> Callable[[MetricFn], MetricFn]:
    """Decorator registering ``fn`` under ``name``; a duplicate name is a ValueError."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; valid: {', '.join(AGGREGATIONS)}")

    def deco(fn: MetricFn) -> MetricFn:
        if name in _REGISTRY or name in _LOADERS:
            raise ValueError(f"metric {name!r} is already registered")
        _REGISTRY[name] = Metric(
            name, fn, higher_is_better, aggregation, kind, description or (fn.__doc__ or "").strip().split("\n")[0]
        )
        return fn

    return deco


def _ensure_builtin() -> None:
    global _builtin_loaded
    if not _builtin_loaded:
        for mod in _BUILTIN_MODULES:
            importlib.import_module(mod)  # registers on first import only
        _builtin_loaded = True


def register_loader(
    name: str,
    loader: Loader,
    *,
    default_source: str,
    higher_is_better: bool = True,
    aggregation: str = "mean",
    kind: str = "reward-model",
    description: str = "",
    normalise: Callable[[str], str] | None = None,
) -> None:
    """Register a metric whose scoring function is built by ``loader(source)`` on first use."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; valid: {', '.join(AGGREGATIONS)}")
    if "=" in name:
        raise ValueError(f"metric name {name!r} must not contain '='")
    if name in _REGISTRY or name in _LOADERS:
        raise ValueError(f"metric {name!r} is already registered")
    _LOADERS[name] = _LoaderSpec(
        loader, default_source, higher_is_better, aggregation, kind, description, normalise or _normalise_source
    )


def _normalise_source(source: str) -> str:
    """Local paths become absolute (one cache entry per file); hub ids stay as they are."""
    path = os.path.expanduser(source)
    return os.path.abspath(path) if os.path.exists(path) else source


def _all_names() -> list[str]:
    return sorted([*_REGISTRY, *_LOADERS])


def _lazy(name: str, source: str) -> MetricFn:
    def fn(images: np.ndarray, prompts: list[str]) -> np.ndarray:
        return load_scorer(name, source)(images, prompts)

    return fn


def load_scorer(name: str, source: str | None = None) -> MetricFn:
    """The loaded scoring function of reward model ``name`` (cached per (name, source))."""
    _ensure_builtin()
    spec = _LOADERS[name]
    source = spec.normalise(source or spec.default_source)
    key = (name, source)
    with _LOCK:
        if key not in _SCORERS:
            try:
                _SCORERS[key] = spec.loader(source)
            except MetricLoadError:
                raise
            except SourceNotFound as exc:  # neither a local path nor a hub id that can be had: say both
                raise MetricLoadError(f"{name}: {exc}; pass {name}=/local/path") from exc
            except OSError as exc:  # missing file, hub unreachable or repo/file not cached
                if not os.path.exists(os.path.expanduser(source)):  # a path with a typo, or a hub id
                    raise MetricLoadError(
                        f"{name}: cannot load {source!r}: no file or folder of that name exists, and "
                        f"as a hub id it is offline or not found; pass {name}=/local/path"
                    ) from exc
                raise MetricLoadError(
                    f"{name}: cannot load {source!r}: {(str(exc).splitlines() or [''])[0][:300]}"
                ) from exc
            except Exception as exc:  # a file that exists but does not fit: say why, on one line
                first = (str(exc).strip().splitlines() or [""])[0][:300]
                raise MetricLoadError(f"{name}: cannot load {source!r}: {type(exc).__name__}: {first}") from exc
        return _SCORERS[key]


def with_weights(fn: MetricFn, *files: str | os.PathLike) -> MetricFn:
    """Mark a loader's scoring function with the weight files it was built from (for
    ``weights_files``: the sha256 that every score and ``refbench doctor`` record)."""
    fn.weights_files = tuple(os.fspath(f) for f in files)  # type: ignore[attr-defined]
    return fn


def weights_files(metric: Metric) -> tuple[str, ...]:
    """The weight files a reward model's scorer was loaded from (loading it if need be; cached);
    () for a metric without weights (the toy oracles) or a loader that does not say."""
    if metric.source is None:
        return ()
    return tuple(getattr(load_scorer(metric.name, metric.source), "weights_files", ()))


def get_metric(name: str) -> Metric:
    """Metric by name; reward models also accept ``name=source`` (hub id or local path)."""
    _ensure_builtin()
    base, sep, source = name.partition("=")
    base, source = base.strip(), source.strip()
    if base in _REGISTRY:
        if sep:
            raise UnknownMetricError(
                f"metric {base!r} takes no source (got {name!r}); only reward models do: {', '.join(sorted(_LOADERS))}"
            )
        return _REGISTRY[base]
    if base not in _LOADERS:
        raise UnknownMetricError(f"unknown metric {name!r}; valid: {', '.join(_all_names())}")
    if sep and not source:
        raise UnknownMetricError(f"metric {name!r}: empty source after '='; use {base}=HUB_ID or {base}=/local/path")
    spec = _LOADERS[base]
    source = spec.normalise(source or spec.default_source)
    key = (base, source)
    if key not in _METRICS:
        _METRICS[key] = Metric(
            base, _lazy(base, source), spec.higher_is_better, spec.aggregation, spec.kind, spec.description, source
        )
    return _METRICS[key]


def list_metrics(kind: str | None = None) -> list[str]:
    """Registered metric names (sorted), optionally only those of one ``kind``."""
    _ensure_builtin()
    kinds = {n: m.kind for n, m in _REGISTRY.items()} | {n: s.kind for n, s in _LOADERS.items()}
    return sorted(n for n, k in kinds.items() if kind is None or k == kind)
