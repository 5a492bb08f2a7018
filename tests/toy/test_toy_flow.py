"""The flow-matching toy world: its committed base model, pretraining, sampler and preset."""

import numpy as np
import pytest
import torch
from cli_helpers import run_refbench

from refbench.store import Store


def test_committed_flow_checkpoint():
    """An SD3Transformer2DModel under 10 MB with the UNet world's text encoder, byte for byte, and
    the scheduler's training grid at shift 1: s(t) = (t + 1) / 1000."""
    from refbench.toy.flow_model import FLOW_CHECKPOINT, load_flow_components
    from refbench.toy.model import BASE_CHECKPOINT, count_parameters

    size = sum(f.stat().st_size for f in FLOW_CHECKPOINT.rglob("*") if f.is_file())
    assert size < 10 * 2**20
    components = load_flow_components()
    assert type(components.transformer).__name__ == "SD3Transformer2DModel"
    assert count_parameters(components.transformer) < 2_500_000
    for name in ("config.json", "model.safetensors"):
        assert (FLOW_CHECKPOINT / "text_encoder" / name).read_bytes() == (
            BASE_CHECKPOINT / "text_encoder" / name
        ).read_bytes()
    assert components.noise_scheduler.config.shift == 1.0


def test_flow_pretraining_resumes_exactly_and_trains_the_transformer_only(tmp_path):
    """6 steps at once == 3 steps, stop, 3 more (within 1e-6); the text encoder stays the UNet
    world's (frozen); the transformer moved away from its initialisation."""
    from refbench.toy.flow_model import build_flow_components, load_flow_components
    from refbench.toy.pretrain import pretrain

    kw = dict(
        steps=6,
        batch_size=2,
        lr=1e-3,
        seed=3,
        warmup=2,
        checkpoint_every=2,
        progress=False,
        world="flow",
        offset_noise=0.0,
    )
    full = load_flow_components(pretrain(tmp_path / "full", **kw))
    pretrain(tmp_path / "split", stop_after=3, **kw)
    resumed = load_flow_components(pretrain(tmp_path / "split", **kw))
    a, b = full.transformer.state_dict(), resumed.transformer.state_dict()
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    init = build_flow_components(seed=3)
    assert any(not torch.equal(p, q) for p, q in zip(init.transformer.parameters(), full.transformer.parameters()))
    assert all(torch.equal(p, q) for p, q in zip(init.text_encoder.parameters(), full.text_encoder.parameters()))
    with pytest.raises(ValueError, match="offset noise"):
        pretrain(tmp_path / "other", **{**kw, "offset_noise": 0.2})


class ConstantVelocity(torch.nn.Module):
    """A stand-in transformer that predicts v = -0.5 everywhere."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = type("Config", (), {"in_channels": 3, "sample_size": 16})()

    def forward(self, hidden_states, timestep, encoder_hidden_states, pooled_projections):
        return type("Out", (), {"sample": torch.full_like(hidden_states, -0.5)})()


def test_euler_sampling_runs_from_pure_noise_to_s_zero():
    """Euler from s = 1 to 0 with a constant velocity v moves x by -v x (1 - 0): the image is the
    initial noise of (prompt, seed) + 0.5, whatever the steps and the guidance (guidance mixes two
    equal velocities). uint8: round((clamp(x, -1, 1) + 1) * 127.5)."""
    from refbench.toy.flow_model import load_flow_components
    from refbench.toy.sampling import initial_noise, sample_flow_images

    components = load_flow_components()
    images = sample_flow_images(
        components,
        ["one red circle on a white background"],
        [7],
        num_inference_steps=3,
        guidance_scale=3.0,
        transformer=ConstantVelocity(),
    )
    x = initial_noise("one red circle on a white background", 7, (3, 16, 16)) + 0.5
    expected = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.abs(images[0].astype(int) - expected.astype(int)).max() <= 1


def test_flow_samples_do_not_depend_on_the_batch():
    """The committed model: an image is the same alone or with another prompt in its batch."""
    from refbench.toy.flow_model import load_flow_components
    from refbench.toy.sampling import sample_flow_images

    components = load_flow_components()
    prompts, seeds = ["one red circle on a white background", "two blue squares on a black background"], [0, 1]
    both = sample_flow_images(components, prompts, seeds, num_inference_steps=4)
    alone = sample_flow_images(components, prompts[1:], seeds[1:], num_inference_steps=4)
    assert np.array_equal(both[1], alone[0]) and not np.array_equal(both[0], both[1])


@pytest.mark.slow
def test_toy_flow_preset_trains_samples_and_analyses(tmp_path, monkeypatch, capsys):
    """`refbench train --preset toy-flow` (3 steps, batch 2, tau 1): three syncs, a transformer folder
    as the final model; `refbench generate` samples it with the flow sampler; the timestep analysis
    names intervals by s (shift 1, 4 intervals: s from 0.751 to 1, ..., 0.001 to 0.25). The commands
    run in this process through the real entry point (``cli_helpers.run_refbench``)."""
    db, out = tmp_path / "db.duckdb", tmp_path / "runs"
    common = ["--db", str(db), "--no-progress"]
    for args in (
        ["train", "--preset", "toy-flow", "--max-steps", "3", "--batch-size", "2", "--tau", "1", "--out", str(out)],
        ["generate", "refdpo", "--prompts", "toy-test", "--num-prompts", "2", "--steps", "3", "--out", str(out)],
        [
            "timestep-analysis",
            "refdpo",
            "--against",
            "init",
            "--pairs",
            "4",
            "--intervals",
            "4",
            "--figure",
            str(tmp_path / "ts.png"),
        ],
    ):
        code, _, err = run_refbench(monkeypatch, capsys, *args, *common)
        assert code == 0, err[-3000:]
    store = Store(db)
    assert store.query("select count(*) as n from ref_events where kind = 'sync'")["n"][0] == 3
    assert (out / "refdpo" / "final" / "transformer" / "config.json").is_file()
    samples = store.query("select sampler, guidance_scale from samples")
    assert (
        samples["sampler"].tolist() == ["toy FlowMatchEulerDiscreteScheduler"] * 2
        and samples["guidance_scale"][0] == 3.0
    )
    stats = store.query("select sigma_low, sigma_high from timestep_stats order by bin")
    assert stats["sigma_high"].tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert stats["sigma_low"].tolist() == pytest.approx([0.751, 0.501, 0.251, 0.001])


def test_every_named_method_trains_on_the_flow_backend(tmp_path):
    """Each named method, 2 steps at batch 2 on the flow toy world: finite losses, and the reference
    passes it should have (none for sft and mapo)."""
    import math

    from refbench.config import load_config, method_names
    from refbench.training.run import run_training

    db = tmp_path / "db.duckdb"
    for method in method_names():
        reference = {} if method in ("sft", "mapo") else {"tau": 1}
        config = load_config(
            method=method,
            preset="toy-flow",
            overrides={
                "method": reference,
                "data": {"max_pairs": 64},
                "training": {"max_steps": 2, "batch_size": 2, "monitor_size": 2, "lr_warmup_steps": 0},
            },
        )
        run_training(config, db=db, out_root=tmp_path / "runs", progress=False)
    store = Store(db)
    losses = store.query("select run, loss from train_metrics")
    assert sorted(losses["run"].unique()) == sorted(method_names())
    assert all(math.isfinite(v) for v in losses["loss"])
    reference = store.query("select run, forward_images from run_costs where kind = 'reference'").set_index("run")[
        "forward_images"
    ]
    assert reference["sft"] == 0 and reference["mapo"] == 0 and reference["dspo"] == reference["refdpo"] == 2 * 2 * 2
