"""`refbench bench` on tiny settings: every key of its JSON is there, and the numbers are
finite and positive. No timing assertions: the machines are shared and noisy."""

import json
import math

import pytest
from cli_helpers import run_refbench

TOP_LEVEL = (
    "refdpo_over_diffdpo_step",
    "diffdpo_over_bare_step",
    "logging_overhead",
    "refdpo_over_diffdpo_memory",
    "cached_over_uncached_step",
    "analysis_over_bare_forward",
)


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    """The bench's own functions on shrunk settings: blocks of 2 steps (tau = monitor_every = 2),
    one repetition, 1 pair per toy step, 2 validation pairs for the timestep analysis."""
    from accelerate import Accelerator

    from refbench.bench import common, report, timing
    from refbench.bench import memory as bench_memory

    root = tmp_path_factory.mktemp("bench")
    saved = common.MIN_BLOCK_STEPS, dict(timing.ANALYSIS_PAIRS)
    common.MIN_BLOCK_STEPS, timing.ANALYSIS_PAIRS[True] = 2, 2
    try:
        accelerator = Accelerator(mixed_precision="no", cpu=True)
        worlds = [common.toy_world(root, quick=True), common.sd_world(root, quick=True)]
        for world in worlds:
            world.overrides["method"]["tau"] = 2
            world.overrides.setdefault("training", {}).update(monitor_every=2, batch_size=1, monitor_size=2)
        timings = {w.name: timing.time_world(w, accelerator, 1, uncached=w.name == "sd15-tiny") for w in worlds}
        memory = bench_memory.memory_table(worlds, accelerator, quick=True)
    finally:
        common.MIN_BLOCK_STEPS, timing.ANALYSIS_PAIRS[True] = saved[0], saved[1][True]
    out = report.summarise(timings, memory, quick=True, repetitions=1, seconds=1.0, load=((0.0,) * 3, (0.0,) * 3))
    return json.loads(json.dumps(out))  # what --json prints


def test_every_ratio_is_there_and_positive(result):
    for key in TOP_LEVEL:
        assert key in result, key
        if key == "analysis_over_bare_forward" and result[key] is None:
            # the timestep-analysis hook could not run; then the bench says why
            assert result["worlds"]["toy"]["analysis"]["skipped"]
            continue
        assert positive(result[key]), (key, result[key])
    assert set(result["targets"]) >= {
        "refdpo_over_diffdpo_step",
        "diffdpo_over_bare_step",
        "logging_overhead",
        "memory_extra_over_weights_full",
        "memory_ratio_lora",
        "analysis_over_bare_forward",
    }


def test_raw_medians_and_memory_rows(result):
    for world, cases in (
        ("toy", ("bare", "diff-dpo", "refdpo", "refdpo+log")),
        ("sd15-tiny", ("bare", "diff-dpo", "refdpo", "refdpo-uncached")),
    ):
        for case in cases:
            assert positive(result["medians"][f"{world}/{case}"]), (world, case)
        assert result["worlds"][world]["syncs_during_bench"] >= 1
    for key in ("toy/full", "sd15-tiny/lora"):
        row = result["memory"][key]
        for method in ("diff-dpo", "refdpo"):
            assert positive(row[method]["peak_bytes"]) and positive(row[method]["unet_weight_bytes"])
    # full fine-tuning: a syncing reference is one more UNet than the fixed one (the initial model)
    assert result["memory"]["toy/full"]["extra_over_unet_weights"] == pytest.approx(1.0, abs=0.01)


def test_table_renders(result):
    from refbench.bench import format_table

    text = format_table(result)
    assert "refdpo_over_diffdpo_step" in text and "memory" in text


@pytest.mark.slow
def test_cli_lists_the_command(monkeypatch, capsys):
    code, out, _ = run_refbench(monkeypatch, capsys, "bench", "--help")
    assert code == 0 and "--quick" in out and "--json" in out


def test_probe_finds_every_part_it_times():
    """The step breakdown wraps methods by name: each must exist on the trainer or its helpers (a
    renamed one used to move its time silently into "other"), and a missing one is an error."""
    from refbench.bench.timing import Probe
    from refbench.training.batches import BatchSource
    from refbench.training.monitor import DivergenceMonitor
    from refbench.training.trainer import Trainer

    helpers = {"batches": BatchSource, "monitor": DivergenceMonitor}
    assert all(callable(getattr(Trainer, name, None)) for name in Probe.PARTS)
    assert all(callable(getattr(helpers[owner], name, None)) for owner, name, _ in Probe.HELPER_PARTS)
    with pytest.raises(AttributeError, match="has no '_batch'"):
        Probe().attach(Trainer, "_batch", "data")
