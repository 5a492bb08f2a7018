"""The whole bench: run every measurement, summarise the ratios against the targets, print."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

# The profiler's C++ logging (kineto) is chatty on a machine without a GPU.
os.environ.setdefault("KINETO_LOG_LEVEL", "5")

from .common import TARGETS, _log, sd_world, toy_world
from .memory import memory_table
from .timing import time_world


# -- the whole bench ----------------------------------------------------------------------------
def run_bench(
    *, quick: bool = False, repetitions: int | None = None, threads: int | None = None, workdir: Path | None = None
) -> dict:
    """Every measurement of the module docstring; returns the JSON-ready result."""
    import torch
    from accelerate import Accelerator

    started = time.perf_counter()
    repetitions = repetitions or (3 if quick else 7)
    if threads:
        torch.set_num_threads(threads)
    load_before = os.getloadavg()
    if load_before[0] > (os.cpu_count() or 1) - 0.5:
        _log(
            f"warning: load average {load_before[0]:.1f} on {os.cpu_count()} cores: other work competes; "
            "with several torch threads every parallel op can wait for a descheduled thread (try --threads 1)"
        )
    accelerator = Accelerator(mixed_precision="no", cpu=not torch.cuda.is_available())
    with tempfile.TemporaryDirectory(prefix="refbench-bench-") as tmp:
        root = Path(workdir or tmp)
        worlds = [toy_world(root, quick), sd_world(root, quick)]
        timings = {
            world.name: time_world(world, accelerator, repetitions, uncached=world.name == "sd15-tiny")
            for world in worlds
        }
        memory = memory_table(worlds, accelerator, quick=quick)
    return summarise(
        timings,
        memory,
        quick=quick,
        repetitions=repetitions,
        seconds=time.perf_counter() - started,
        load=(load_before, os.getloadavg()),
    )


def summarise(timings: dict, memory: dict, *, quick: bool, repetitions: int, seconds: float, load) -> dict:
    import torch

    def worst(key: str, rows, higher_is_worse: bool = True):
        values = [r[key] for r in rows if r.get(key) is not None]
        if not values:
            return None
        return max(values) if higher_is_worse else min(values)

    ratios = [t["ratios"] for t in timings.values()]
    full = [row for key, row in memory.items() if key.endswith("/full")]
    lora = [row for key, row in memory.items() if key.endswith("/lora")]
    analysis = [t["analysis"] for t in timings.values() if t.get("analysis")]
    out = {
        "refdpo_over_diffdpo_step": worst("refdpo_over_diffdpo_step", ratios),
        "diffdpo_over_bare_step": worst("diffdpo_over_bare_step", ratios),
        "logging_overhead": worst("logging_overhead", ratios),
        "refdpo_over_diffdpo_memory": worst("refdpo_over_diffdpo", memory.values()),
        "cached_over_uncached_step": worst("cached_over_uncached_step", ratios),
        "analysis_over_bare_forward": worst("analysis_over_bare_forward", analysis, higher_is_worse=False),
        "memory_extra_over_weights_full": worst("extra_over_unet_weights", full),
        "memory_ratio_lora": worst("refdpo_over_diffdpo", lora),
    }
    out["targets"] = {}
    for name, (op, bound) in TARGETS.items():
        value = out.get(name)
        met = None if value is None else (value <= bound if op == "<=" else value >= bound)
        out["targets"][name] = {"value": value, "target": f"{op} {bound}", "met": met}
    out["medians"] = {
        f"{world}/{case}": seconds
        for world, t in timings.items()
        for case, seconds in t["median_seconds_per_step"].items()
    }
    out["worlds"] = timings
    out["memory"] = memory
    out["run"] = {
        "quick": quick,
        "repetitions": repetitions,
        "seconds": round(seconds, 1),
        "top_level": "each top-level ratio is the worse of the two worlds (toy, sd15-tiny)",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_before": load[0],
            "load_average_after": load[1],
            "cuda": torch.cuda.is_available(),
        },
    }
    return out


def format_table(result: dict) -> str:
    """The human-readable summary: targets, then per-world medians and ratios, then memory."""
    lines = ["target                            value     target     met"]
    for name, row in result["targets"].items():
        value = "n/a" if row["value"] is None else f"{row['value']:.3f}"
        met = {True: "yes", False: "NO", None: "-"}[row["met"]]
        lines.append(f"{name:<33} {value:>8}  {row['target']:>9}  {met:>5}")
    cached = result.get("cached_over_uncached_step")
    lines.append(f"{'cached_over_uncached_step':<33} {cached:>8.3f}  {'(info)':>9}" if cached else "")
    for world, t in result["worlds"].items():
        lines.append("")
        lines.append(
            f"{world}: {t['batch_pairs']} pairs/step, tau {t['tau']}, monitor every {t['monitor_every']} "
            f"({t['monitor_size']} winners), {t['steps_per_block']} steps per block"
        )
        for case, seconds in t["median_seconds_per_step"].items():
            lines.append(f"  {case:<18} {seconds * 1000:8.1f} ms/step (median)")
        for name, value in t["ratios"].items():
            lines.append(f"  {name:<30} {value:8.3f}")
        logging = t.get("logging")
        if logging:
            lines.append(
                f"  store logging: a flush costs {logging['flush_fixed_seconds'] * 1000:.0f} ms + "
                f"{logging['flush_per_row_seconds'] * 1000:.1f} ms per row; all logging within this short "
                f"bench: {logging['short_bench'] * 100:.1f}% of its steps"
            )
        for name, parts in t.get("breakdown_seconds_per_step", {}).items():
            shares = ", ".join(f"{part} {seconds * 1000:.1f}" for part, seconds in sorted(parts.items()))
            lines.append(f"  where a {name} step goes (ms): {shares}")
        analysis = t.get("analysis")
        if analysis and "skipped" not in analysis:
            lines.append(f"  {'analysis_over_bare_forward':<30} {analysis['analysis_over_bare_forward']:8.3f}")
        elif analysis:
            lines.append(f"  timestep analysis skipped: {analysis['skipped']}")
    lines.append("")
    lines.append("memory (peak torch-allocated MB from building the trainer through a sync step)")
    for key, row in result["memory"].items():
        d, r = row["diff-dpo"], row["refdpo"]
        lines.append(
            f"  {key:<16} diff-dpo {d['peak_bytes'] / 1e6:8.2f}  refdpo {r['peak_bytes'] / 1e6:8.2f}  "
            f"ratio {row['refdpo_over_diffdpo']:.3f}  extra/UNet weights {row['extra_over_unet_weights']:.2f}"
        )
    lines.append(
        f"\n{result['run']['seconds']} s, {result['run']['repetitions']} repetitions"
        f"{' (--quick)' if result['run']['quick'] else ''}; load average before/after "
        f"{result['run']['machine']['load_average_before'][0]:.2f}/{result['run']['machine']['load_average_after'][0]:.2f}"
    )
    return "\n".join(line for line in lines if line is not None)


def bench(
    *,
    quick: bool = False,
    as_json: bool = False,
    out: Path | None = None,
    repetitions: int | None = None,
    threads: int | None = None,
) -> str:
    """What `refbench bench` prints (the table, or the JSON); writes the JSON to ``out`` if given."""
    result = run_bench(quick=quick, repetitions=repetitions, threads=threads)
    text = json.dumps(result, indent=2)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    return text if as_json else format_table(result)


__all__ = ["bench", "run_bench", "summarise", "format_table", "TARGETS"]
