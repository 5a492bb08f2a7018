"""The rectified-flow path (SD3 / SD3.5) on tiny random-weight pipelines built from configs.

Same classes as SD3 (SD3Transformer2DModel, the 16-channel AutoencoderKL with its shift and
scaling factors, two CLIP encoders with projections, optionally T5, FlowMatchEulerDiscreteScheduler
with shift 3), loaded through the same code; nothing is downloaded. Real SD3 weights and
Pick-a-Pic were not run here (no GPU, no hub). The commands run in this process through the real
entry point (``cli_helpers.run_refbench``); only `accelerate launch` starts processes.
"""

import json
import os
import subprocess

import numpy as np
import pytest
import torch
from cli_helpers import run_refbench
from launch_helpers import accelerate_launch
from safetensors.torch import load_file

from refbench.store import Store


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from refbench.tiny import build_tiny_sd3_pipeline
    from refbench.toy.pairs import build_pairs, write_pairs

    root = tmp_path_factory.mktemp("tiny-sd3")
    build_tiny_sd3_pipeline(root / "sd35-t5", sd35=True, t5=True)
    build_tiny_sd3_pipeline(root / "sd3")  # no T5: text_encoder_3 = None
    write_pairs(build_pairs(16, "train", seed=3), root / "pairs.parquet")
    write_pairs(build_pairs(8, "validation", seed=4), root / "validation.parquet")
    return root


@pytest.fixture
def refbench(monkeypatch, capsys):
    """`refbench ARGS` in this process, which must succeed; its stdout."""

    def call(*args):
        code, out, err = run_refbench(monkeypatch, capsys, *args)
        assert code == 0, err[-3000:]
        return out

    return call


def train_args(tiny, tmp_path, preset, folder, lora, steps=3):
    return [
        "train",
        "--preset",
        preset,
        "--model",
        tiny / folder,
        "--data",
        tiny / "pairs.parquet",
        "--max-steps",
        steps,
        "--resolution",
        "16",
        "--batch-size",
        "2",
        "--accumulation",
        "2",
        "--tau",
        "1",
        "--lora-rank",
        lora,
        "--db",
        tmp_path / "db.duckdb",
        "--out",
        tmp_path / "runs",
        "--no-progress",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("preset, folder, lora", [("sd35", "sd35-t5", 0), ("sd3", "sd3", 4)])
def test_train_generate_and_load_with_plain_diffusers(tiny, tmp_path, refbench, preset, folder, lora):
    """`refbench train --preset sd35|sd3 --model DIR --data FILE --max-steps 3`, full (SD3.5 with T5)
    and LoRA (SD3 without T5); the policy samples through StableDiffusion3Pipeline, and plain
    diffusers loads the output (the transformer folder, or load_lora_weights) and makes the same
    image from the same noise."""
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
    from PIL import Image

    from refbench.toy.sampling import initial_noise

    refbench(*train_args(tiny, tmp_path, preset, folder, lora))
    store = Store(tmp_path / "db.duckdb")
    assert store.query("select count(*) as n from train_metrics where run = 'refdpo'")["n"][0] == 3
    assert store.query("select count(*) as n from ref_events where kind = 'sync'")["n"][0] == 3
    final = tmp_path / "runs" / "refdpo" / "final"
    assert (final / ("pytorch_lora_weights.safetensors" if lora else "transformer/config.json")).is_file()
    refbench(
        "generate",
        "refdpo",
        "--prompts",
        "toy-test",
        "--num-prompts",
        "2",
        "--steps",
        "2",
        "--db",
        tmp_path / "db.duckdb",
        "--out",
        tmp_path / "runs",
        "--no-progress",
    )
    samples = store.query(
        "select prompt, seed, image_path, guidance_scale, sampler from samples where run = 'refdpo' order by prompt"
    )
    assert len(samples) == 2 and samples["guidance_scale"].tolist() == [7.0, 7.0]
    assert samples["sampler"][0] == "StableDiffusion3Pipeline FlowMatchEulerDiscreteScheduler"
    without_t5 = {} if folder == "sd35-t5" else {"text_encoder_3": None, "tokenizer_3": None}
    pipe = StableDiffusion3Pipeline.from_pretrained(str(tiny / folder), **without_t5)
    if lora:
        pipe.load_lora_weights(str(final))
        assert pipe.get_list_adapters()  # diffusers loads nothing, silently, from a folder without LoRA weights
    else:
        pipe.transformer = SD3Transformer2DModel.from_pretrained(str(final / "transformer"))
    latents = initial_noise(samples["prompt"][0], int(samples["seed"][0]), (16, 8, 8))[None]
    image = pipe(
        [samples["prompt"][0]],
        latents=latents,
        guidance_scale=7.0,
        num_inference_steps=2,
        height=16,
        width=16,
        output_type="np",
        max_sequence_length=77,
    ).images[0]
    made = np.asarray(Image.open(samples["image_path"][0]), dtype=np.int16)
    assert np.abs((np.clip(image, 0, 1) * 255).round().astype(np.int16) - made).max() <= 1
    # The timestep analysis of a flow run names its intervals in noise levels s.
    refbench(
        "timestep-analysis",
        "refdpo",
        "--against",
        "init",
        "--pairs",
        "4",
        "--intervals",
        "4",
        "--data",
        tiny / "validation.parquet",
        "--db",
        tmp_path / "db.duckdb",
        "--figure",
        tmp_path / "ts.png",
        "--no-progress",
    )
    stats = store.query("select bin, t_low, t_high, sigma_low, sigma_high from timestep_stats order by bin")
    # Shift 3 on T = 1000: s(999) = 1; s(750) = 3 u / (1 + 2 u) at u = 0.751: 2.253 / 2.502 = 0.90048;
    # s(749) = 0.9 exactly (u = 0.75: 2.25 / 2.5).
    assert stats["t_high"].tolist() == [1000, 750, 500, 250] and stats["sigma_high"][0] == pytest.approx(1.0)
    assert stats["sigma_low"][0] == pytest.approx(2.253 / 2.502, abs=1e-6) and stats["sigma_high"][1] == pytest.approx(
        0.9
    )
    assert (tmp_path / "ts.png").is_file()


def test_sd3_conditioning_and_latents(tiny):
    """Text: both CLIP encoders' states (32 + 32 wide) padded to the joint width 64, then T5's (or
    77 zeros without it) along the sequence: 32 CLIP tokens + 77 T5 tokens; pooled 32 + 32 = 64.
    Latents: (VAE mean - 0.0609) * 1.5305 on 16 channels at 16 / 2 = 8 px."""
    from refbench.config import ModelConfig
    from refbench.training.backends import load_backend

    with_t5 = load_backend(ModelConfig(kind="sd3", pretrained=str(tiny / "sd35-t5"), resolution=16))
    cond = with_t5.encode_text(["a red circle", "two blue squares"])
    assert cond.hidden.shape == (2, 32 + 77, 64) and cond.added["pooled_projections"].shape == (2, 64)
    assert cond.hidden[:, 32:].abs().sum() > 0
    dropped = load_backend(ModelConfig(kind="sd3", pretrained=str(tiny / "sd35-t5"), resolution=16, t5=False))
    cond_dropped = dropped.encode_text(["a red circle", "two blue squares"])
    assert cond_dropped.hidden.shape == (2, 32 + 77, 64)  # 77 zero tokens in T5's place, as diffusers does
    assert cond_dropped.hidden[:, 32:].abs().sum() == 0 and torch.equal(
        cond_dropped.hidden[:, :32], cond.hidden[:, :32]
    )
    images = np.random.default_rng(0).integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8)
    latents = with_t5.encode_images(images)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().float() / 127.5 - 1
    mean = with_t5.vae.encode(pixels).latent_dist.mean
    assert latents.shape == (2, 16, 8, 8) and torch.allclose(latents, (mean - 0.0609) * 1.5305, atol=1e-6)


def test_the_trainer_noises_on_the_shifted_grid(tiny):
    """t = 999 is pure noise (s = 1); t = 499 has u = 0.5, s = 1.5 / 2 = 0.75: x = 0.25 x0 + 0.75 eps;
    the target is eps - x0. The transformer is called at s * 1000 = 750."""
    from refbench.config import ModelConfig
    from refbench.training.backends import load_backend

    backend = load_backend(ModelConfig(kind="sd3", pretrained=str(tiny / "sd3"), resolution=16), encoders=False)
    x0, noise = torch.full((2, 16, 8, 8), 2.0), torch.full((2, 16, 8, 8), -1.0)
    noisy = backend.add_noise(x0, noise, torch.tensor([999, 499]))
    assert noisy[0].unique().tolist() == [-1.0] and noisy[1].unique().tolist() == pytest.approx([0.25 * 2 - 0.75])
    assert backend.target(x0, noise, torch.tensor([999, 499])).unique().tolist() == [-3.0]
    seen = []
    backend.predict(
        lambda **kw: seen.append(kw["timestep"]) or type("Out", (), {"sample": kw["hidden_states"]}),
        noisy,
        torch.tensor([999, 499]),
        type("C", (), {"hidden": None, "added": {"pooled_projections": torch.zeros(2, 64)}}),
    )
    assert seen[0].tolist() == pytest.approx([1000.0, 750.0])
    assert backend.prediction_type == "flow" and backend.alphas_cumprod[-1] == 0.0


@pytest.mark.slow
def test_resume_and_two_processes_on_sd3(tiny, tmp_path, refbench):
    """LoRA on tiny SD3: stopped at step 2 and resumed to 4 ends with the weights of 4 straight steps
    (within 1e-6); `accelerate launch` with 2 gloo processes ends with the same weights and reference
    events on both."""
    straight, resumed = tmp_path / "a", tmp_path / "b"
    refbench(*train_args(tiny, straight, "sd3", "sd3", 4, steps=4))
    refbench(*train_args(tiny, resumed, "sd3", "sd3", 4, steps=2))
    refbench(*train_args(tiny, resumed, "sd3", "sd3", 4, steps=4), "--resume")
    for part in ("policy", "reference"):
        a = load_file(str(straight / "runs" / "refdpo" / "checkpoint" / f"{part}.safetensors"))
        b = load_file(str(resumed / "runs" / "refdpo" / "checkpoint" / f"{part}.safetensors"))
        assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    two = tmp_path / "two"
    args = [
        *accelerate_launch(2),
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "refbench",
        *map(str, train_args(tiny, two, "sd3", "sd3", 4)),
    ]
    result = subprocess.run(
        args, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((two / "runs" / "refdpo" / "processes.json").read_text())
    assert [r["process"] for r in report] == [0, 1] and report[0]["events"] == report[1]["events"]
    assert report[0]["policy_checksum"] == report[1]["policy_checksum"]
    assert report[0]["reference_checksum"] == report[1]["reference_checksum"]


@pytest.mark.slow
def test_latent_cache_on_sd3(tiny, tmp_path, refbench):
    """`refbench cache-latents --preset sd3` stores the 16-channel latents and SD3's pooled projections
    (an added conditioning key); a run from the cache sees the first step's inputs of a run that
    encodes its images and captions: the same denoising errors, to float rounding."""
    from refbench.config import load_config
    from refbench.training.run import run_training

    cache = tmp_path / "latents"
    refbench(
        "cache-latents",
        "--preset",
        "sd3",
        "--model",
        tiny / "sd3",
        "--data",
        tiny / "pairs.parquet",
        "--resolution",
        "16",
        "--dtype",
        "float32",
        "--out",
        cache,
        "--no-progress",
    )
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["complete"] and meta["added_keys"] == ["pooled_projections"]
    assert np.load(cache / "latents.npy", mmap_mode="r").shape[1:] == (2, 16, 8, 8)
    errors = {}
    for name, data in (("plain", {}), ("cached", {"latent_cache": str(cache), "latent_dtype": "float32"})):
        overrides = {
            "model": {"pretrained": str(tiny / "sd3"), "resolution": 16, "lora_rank": 4},
            "data": {"source": str(tiny / "pairs.parquet"), "random_flip": False, **data},
            "training": {"max_steps": 1, "batch_size": 2, "effective_batch": None, "gradient_accumulation_steps": 1},
        }
        run_training(
            load_config(method="refdpo", preset="sd3", name=name, overrides=overrides),
            db=tmp_path / "db.duckdb",
            out_root=tmp_path / "runs",
            progress=False,
        )
        errors[name] = (
            Store(tmp_path / "db.duckdb")
            .query(f"select model_err_w, model_err_l from train_metrics where run = '{name}'")
            .iloc[0]
            .tolist()
        )
    assert errors["cached"] == pytest.approx(errors["plain"], rel=1e-5)
