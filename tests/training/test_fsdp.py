"""FSDP2 through accelerate (issue 28): `accelerate launch --config_file examples/accelerate/fsdp-1node.yaml
-m refbench train` with 2 gloo processes on the tiny SD1.5 and SD3 pipelines, against the same run
data-parallel (`accelerate launch --multi_gpu`), same seed.

The rule (the tolerance of "the same weights"; written after two prototype comparisons showed the
AdamW effect below, before these tests first ran):
both runs compute the same update up to the order of float additions (a reduce-scatter instead of
an all-reduce, a gradient norm summed shard by shard). AdamW divides each gradient by its own
running size, so a weight whose gradient is near its rounding error moves by up to +-lr on
either side. Hence, after 3 steps at lr 1e-3 (x 8, the scaled rate):
  - every logged loss agrees within 1e-3 and the first exactly (rel 1e-6);
  - the reference events are the same (kind and step) with divergences within rel 1e-3;
  - fewer than 0.1 % of weights differ by more than 1 % of the median change from the initial
    model, and none by more than 10 % of the largest change.
A run that did not average gradients over the ranks, updated a reference that was not synced, or
read other data would differ in most weights. (The tiny UNet has 8 GroupNorm groups here: with one
channel a group, three tensors have an exact gradient of zero, whose rounding AdamW amplifies.)
A run killed and resumed under FSDP is held to the same rule.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from launch_helpers import free_port
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FSDP_CONFIG = ROOT / "examples" / "accelerate" / "fsdp-1node.yaml"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
STEPS = 3
FAST = [
    *["--set", "training.learning_rate=1e-3", "--set", "training.lr_warmup_steps=0", "--set", "method.delta=1e-9"],
    *["--set", "training.monitor_size=4"],
]
# Every reference rule on shards, between the two layouts: full fine-tuning (SD1.5 refdpo) mixes the
# reference half-way (a soft sync, TR-DPO's mix) and freezes it past delta; LoRA (SD3 refdpo;
# refbench allows only hard copies of adapters) copies it and re-initialises it past delta.
SOFT = ["--set", "method.mixup_alpha=0.5"]
REINIT = ["--set", "method.on_exceed=reinit"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from refbench.tiny import build_tiny_pipeline, build_tiny_sd3_pipeline
    from refbench.toy.pairs import build_pairs, write_pairs

    root = tmp_path_factory.mktemp("tiny-fsdp")
    build_tiny_pipeline(root / "sd15", norm_groups=8)
    build_tiny_sd3_pipeline(root / "sd3")
    write_pairs(build_pairs(16, "train", seed=3), root / "pairs.parquet")
    return root


def launcher(engine: str) -> list[str]:
    """accelerate launch with 2 gloo processes: the shipped FSDP config, or data parallel."""
    engine_flags = ["--config_file", str(FSDP_CONFIG)] if engine == "fsdp" else ["--multi_gpu"]
    return [
        str(Path(sys.executable).with_name("accelerate")),
        "launch",
        *engine_flags,
        *["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"],
        *["--main_process_port", str(free_port()), "-m", "refbench"],
    ]


def train_args(tiny: Path, out: Path, preset: str, method: str, lora: int, steps: int, *extra) -> list[str]:
    return [
        *["train", "--preset", preset, "--method", method, "--model", str(tiny / preset)],
        *["--data", str(tiny / "pairs.parquet"), "--max-steps", str(steps), "--resolution", "16"],
        *["--batch-size", "2", "--accumulation", "2", "--tau", "1", "--lora-rank", str(lora)],
        *["--db", str(out / "db.duckdb"), "--out", str(out / "runs"), "--no-progress", *FAST, *map(str, extra)],
    ]


def command(engine: str, *args) -> list[str]:
    return [*launcher(engine), *train_args(*args)]


def train(*args) -> Path:
    result = subprocess.run(command(*args), capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stderr[-4000:]
    engine, _, out, _, method = args[:5]
    return out / "runs" / method


def losses(run: Path) -> list[float]:
    from refbench.store import Store

    frame = Store(run.parents[1] / "db.duckdb").query("select step, loss from train_metrics order by step")
    return frame["loss"].tolist()


def final_weights(run: Path, folder: str, weights: str = "final") -> dict[str, torch.Tensor]:
    return load_file(str(run / weights / folder / "diffusion_pytorch_model.safetensors"))


def assert_same_update(fsdp: dict, dp: dict, initial: dict) -> None:
    assert fsdp.keys() == dp.keys()
    diff = torch.cat([(fsdp[k] - dp[k]).flatten() for k in dp]).abs()
    change = torch.cat([(dp[k] - initial[k]).flatten() for k in dp]).abs()
    assert change.max() > 0
    off = (diff > 0.01 * change.median()).float().mean().item()
    assert off < 1e-3, f"{off:.2%} of weights differ by more than 1% of the median change"
    assert diff.max() <= 0.1 * change.max(), (diff.max().item(), change.max().item())


def assert_same_events(fsdp: Path, dp: Path) -> None:
    """The same events (over the steps both ran) and, under FSDP, the same gathered weights on each rank."""
    a, b = (json.loads((run / "processes.json").read_text()) for run in (fsdp, dp))
    assert [p["process"] for p in a] == [0, 1]
    assert a[0]["policy_checksum"] == a[1]["policy_checksum"]
    last = min(len(losses(fsdp)), len(losses(dp)))
    events_a, events_b = ([e for e in p[0]["events"] if e["step"] <= last] for p in (a, b))
    assert [(e["step"], e["kind"]) for e in events_a] == [(e["step"], e["kind"]) for e in events_b]
    assert [e["divergence"] for e in events_a] == pytest.approx([e["divergence"] for e in events_b], rel=1e-3, abs=1e-9)


def assert_sharded_checkpoint(run: Path, reference: bool) -> None:
    checkpoint = run / "checkpoint"
    state = json.loads((checkpoint / "state.json").read_text())
    assert state["sharded"] == {"processes": 2, "reference": reference}
    assert (checkpoint / "pytorch_model_fsdp_0" / ".metadata").is_file()
    assert (checkpoint / "optimizer_0" / ".metadata").is_file()
    assert (checkpoint / "pytorch_model_fsdp_1").is_dir() == reference
    assert not (checkpoint / "policy.safetensors").exists()


def compare_on_sd15(tiny: Path, fsdp: Path, dp: Path, method: str, weights: str = "final") -> None:
    """``weights``: the FSDP run's folder to compare with the data-parallel run's final output."""
    from diffusers import UNet2DConditionModel

    assert_sharded_checkpoint(fsdp, reference=method == "refdpo")
    initial = load_file(str(tiny / "sd15" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert_same_update(final_weights(fsdp, "unet", weights), final_weights(dp, "unet"), initial)
    assert_same_events(fsdp, dp)
    assert losses(fsdp)[0] == pytest.approx(losses(dp)[0], rel=1e-6)
    assert losses(fsdp)[:STEPS] == pytest.approx(losses(dp)[:STEPS], abs=1e-3)
    unet = UNet2DConditionModel.from_pretrained(str(fsdp / weights / "unet"))
    assert type(unet).__name__ == "UNet2DConditionModel"
    assert torch.equal(unet.state_dict()["conv_in.weight"], final_weights(fsdp, "unet", weights)["conv_in.weight"])


def test_diff_dpo_on_sd15_fsdp_and_data_parallel_agree(tiny, tmp_path):
    """Tiny SD1.5, full fine-tuning, 3 steps: FSDP (sharded checkpoint, both ranks' gathered weights
    equal) against data parallel, by the rule above; plain diffusers loads the sharded run's UNet."""
    fsdp = train("fsdp", tiny, tmp_path / "fsdp", "sd15", "diff-dpo", 0, STEPS)
    dp = train("dp", tiny, tmp_path / "dp", "sd15", "diff-dpo", 0, STEPS)
    compare_on_sd15(tiny, fsdp, dp, "diff-dpo")


def test_refdpo_on_sd15_killed_and_resumed_under_fsdp_agrees_with_data_parallel(tiny, tmp_path):
    """refdpo on tiny SD1.5 (soft syncs, alpha 0.5, then a freeze) under FSDP, 6 steps with a
    sharded checkpoint every 2 and a snapshot after step 3 (gathered like the final output),
    SIGKILLed (every process) once its first checkpoint exists and `--resume`d under FSDP: its
    step-3 snapshot, written after the resume, agrees with 3 steps of data parallel by the rule
    above (resume is exact within that tolerance: optimizer moments or a reference lost on resume
    would move most weights), and so do its events and losses. timestep-analysis reads the sharded
    checkpoint: the policy is the final output, the frozen reference agrees with data parallel's.
    (Resuming a sharded checkpoint without FSDP or with another number of ranks is refused in one
    line: tests/training/test_sharding.py.)"""
    steps = 6
    every = [*SOFT, "--set", "training.checkpoint_every=2", "--set", f"training.snapshot_steps=[{STEPS}]"]
    dp = train("dp", tiny, tmp_path / "dp", "sd15", "refdpo", 0, STEPS, *SOFT)
    out = tmp_path / "fsdp"
    process = subprocess.Popen(
        command("fsdp", tiny, out, "sd15", "refdpo", 0, steps, *every),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = out / "runs" / "refdpo" / "checkpoint" / "state.json"
    deadline = time.monotonic() + 240
    while not state.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in [*descendants(process.pid), process.pid]:  # torchrun's workers are not in its group
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()
    assert json.loads(state.read_text())["step"] == 2, "not killed right after the first checkpoint"
    assert not (out / "runs" / "refdpo" / "snapshots").exists()  # step 3 comes after the resume

    fsdp = train("fsdp", tiny, out, "sd15", "refdpo", 0, steps, *every, "--resume")
    compare_on_sd15(tiny, fsdp, dp, "refdpo", weights=f"snapshots/step-{STEPS}/final")
    assert len(losses(fsdp)) == steps

    from refbench.experiments.timestep_analysis import _checkpoint_weights, analyse_run

    policy, reference = _checkpoint_weights(fsdp / "checkpoint", True, lora=False)
    final = final_weights(fsdp, "unet")
    assert policy.keys() == final.keys() and all(torch.equal(policy[k], final[k]) for k in final)
    initial = load_file(str(tiny / "sd15" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert_same_update(reference, load_file(str(dp / "checkpoint" / "reference.safetensors")), initial)
    db = fsdp.parents[1] / "db.duckdb"
    rows = analyse_run("refdpo", db=db, num_pairs=2, intervals=2, data=str(tiny / "pairs.parquet"), progress=False)
    assert len(rows) == 2


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), deepest first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found[::-1]


def test_diff_dpo_on_sd3_fsdp_and_data_parallel_agree(tiny, tmp_path):
    """Tiny SD3, full fine-tuning, diff-dpo, by the rule above, the FSDP run with its frozen copy's
    shards offloaded to CPU memory (model.offload_frozen; on this CPU-only machine that exercises
    the setting, not a device move). Plain diffusers loads the transformer."""
    from diffusers import SD3Transformer2DModel

    offload = ["--set", "model.offload_frozen=true"]
    fsdp = train("fsdp", tiny, tmp_path / "fsdp", "sd3", "diff-dpo", 0, STEPS, *offload)
    dp = train("dp", tiny, tmp_path / "dp", "sd3", "diff-dpo", 0, STEPS)
    assert_sharded_checkpoint(fsdp, reference=False)
    initial = load_file(str(tiny / "sd3" / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert_same_update(final_weights(fsdp, "transformer"), final_weights(dp, "transformer"), initial)
    assert_same_events(fsdp, dp)
    assert losses(fsdp) == pytest.approx(losses(dp), abs=1e-3)
    SD3Transformer2DModel.from_pretrained(str(fsdp / "final" / "transformer"))


def test_refdpo_lora_on_sd3_fsdp_and_data_parallel_agree_and_load_in_diffusers(tiny, tmp_path):
    """refdpo with LoRA rank 4 on tiny SD3 (policy and reference adapters on one sharded transformer),
    copying the reference (hard sync) and re-initialising it past delta: the same adapter weights as
    data parallel by the rule above (B starts at 0, so its value is its change), the same events,
    and `load_lora_weights` finds the adapter. (Soft sync and freeze: the SD1.5 refdpo test.)"""
    from diffusers import StableDiffusion3Pipeline

    fsdp = train("fsdp", tiny, tmp_path / "fsdp", "sd3", "refdpo", 4, STEPS, *REINIT)
    dp = train("dp", tiny, tmp_path / "dp", "sd3", "refdpo", 4, STEPS, *REINIT)
    assert_sharded_checkpoint(fsdp, reference=False)  # the reference adapter lives in the policy's module
    kinds = {e["kind"] for e in json.loads((fsdp / "processes.json").read_text())[0]["events"]}
    assert {"sync", "reinit"} <= kinds, kinds
    a, b = (load_file(str(run / "final" / "pytorch_lora_weights.safetensors")) for run in (fsdp, dp))
    lora_b = {k: v for k, v in b.items() if "lora_B" in k}
    assert_same_update({k: a[k] for k in lora_b}, lora_b, {k: torch.zeros_like(v) for k, v in lora_b.items()})
    assert_same_events(fsdp, dp)
    assert losses(fsdp) == pytest.approx(losses(dp), abs=1e-3)
    pipe = StableDiffusion3Pipeline.from_pretrained(
        str(tiny / "sd3"), text_encoder_3=None, tokenizer_3=None, feature_extractor=None, image_encoder=None
    )
    pipe.load_lora_weights(str(fsdp / "final"))
    assert pipe.get_list_adapters()
