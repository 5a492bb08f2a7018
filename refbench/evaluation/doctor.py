"""`refbench doctor`: can the reward models be loaded here, offline, exactly as `score` loads them?

Per metric (default: the paper's five): its source, the sha256 and size of its weight files,
and a one-line status. Weight files are those of a local source (the file, or the weight
files in the folder and its subfolders) or of a hub id's snapshot in the local hub cache;
nothing is downloaded. With no metrics named, the versions of the stack and whether a GPU is
visible come first.
"""

from __future__ import annotations

from dataclasses import dataclass

from .weights import digest, weight_files

__all__ = ["MetricCheck", "check_metric", "check_metrics", "environment"]

PACKAGES = ("torch", "diffusers", "transformers", "accelerate", "open_clip_torch")


@dataclass
class MetricCheck:
    name: str
    source: str
    sha256: str | None
    size_bytes: int
    ok: bool
    status: str  # "ok", or the one-line reason it cannot be loaded


def check_metric(spec: str) -> MetricCheck:
    """Load ``name`` or ``name=source`` as `refbench score` would, and describe its weights."""
    from ..errors import RefbenchError
    from .metrics import get_metric, load_scorer

    name = spec.partition("=")[0].strip()
    try:
        metric = get_metric(spec)
    except (RefbenchError, KeyError, ValueError) as exc:
        return MetricCheck(name, spec.partition("=")[2], None, 0, False, str(exc).splitlines()[0])
    source = metric.source or "(computed from pixels)"
    files = weight_files(metric.source) if metric.source else []
    try:
        if metric.source:
            load_scorer(metric.name, metric.source)
        ok, status = True, "ok"
    except RefbenchError as exc:
        ok, status = False, str(exc).splitlines()[0]
    except Exception as exc:  # anything else a loader raises: still one line
        ok, status = False, f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
    return MetricCheck(metric.name, source, digest(files), sum(f.stat().st_size for f in files), ok, status)


def check_metrics(specs: list[str]) -> list[MetricCheck]:
    return [check_metric(spec) for spec in specs]


def environment() -> dict[str, str]:
    """Installed versions of the stack, and whether a GPU is visible."""
    import torch

    from ..provenance import package_versions

    versions = package_versions(PACKAGES)

    versions["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none visible"
    return versions
