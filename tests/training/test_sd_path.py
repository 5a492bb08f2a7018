"""The real-model path on tiny random-weight SD1.5 / SDXL pipelines built from configs.

The pipelines use the same classes as Stable Diffusion (UNet2DConditionModel, AutoencoderKL,
CLIP text encoders, CLIPTokenizer, DDPMScheduler) and are loaded through the same code;
nothing is downloaded. Real SD weights and Pick-a-Pic were not run here (no GPU, no hub).
The commands run in this process through the real entry point (``cli_helpers.run_refbench``).
"""

import numpy as np
import pytest
import torch
from cli_helpers import run_refbench

from refbench.store import Store


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from refbench.toy.pairs import build_pairs, write_pairs
    from refbench.training.backends import backend_class

    root = tmp_path_factory.mktemp("tiny")
    for kind in ("sd15", "sdxl"):
        backend_class(kind).build_tiny(root / kind)
    write_pairs(build_pairs(16, "train", seed=3), root / "pairs.parquet")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("kind, lora", [("sd15", 0), ("sd15", 4), ("sdxl", 0), ("sdxl", 4)])
def test_train_cli_on_tiny_pipelines(tiny, tmp_path, monkeypatch, capsys, kind, lora):
    """`refbench train --preset sd15|sdxl --model DIR --data FILE --max-steps 3` runs through the CLI."""
    db = tmp_path / "db.duckdb"
    args = [
        "train",
        "--preset",
        kind,
        "--model",
        str(tiny / kind),
        "--data",
        str(tiny / "pairs.parquet"),
        "--max-steps",
        "3",
        "--resolution",
        "16",
        "--batch-size",
        "2",
        "--accumulation",
        "2",
        "--tau",
        "1",
        "--lora-rank",
        str(lora),
        "--db",
        str(db),
        "--out",
        str(tmp_path / "runs"),
        "--no-progress",
    ]
    code, _, err = run_refbench(monkeypatch, capsys, *args)
    assert code == 0, err[-2000:]
    store = Store(db)
    assert store.query("select count(*) as n from train_metrics where run = 'refdpo'")["n"][0] == 3
    assert store.query("select count(*) as n from ref_events where kind = 'sync'")["n"][0] == 3
    final = tmp_path / "runs" / "refdpo" / "final"
    assert (final / ("pytorch_lora_weights.safetensors" if lora else "unet/config.json")).is_file()
    # The trained policy samples through the diffusers pipeline, noise fixed by (prompt, seed).
    code, _, err = run_refbench(
        monkeypatch,
        capsys,
        "generate",
        "refdpo",
        "--prompts",
        "toy-test",
        "--num-prompts",
        "2",
        "--steps",
        "2",
        "--db",
        db,
        "--out",
        tmp_path / "runs",
        "--no-progress",
    )
    assert code == 0, err[-2000:]
    samples = store.query("select image_path, guidance_scale from samples where run = 'refdpo'")
    assert len(samples) == 2 and samples["guidance_scale"].tolist() == [7.5 if kind == "sd15" else 5.0] * 2
    from PIL import Image

    assert Image.open(samples["image_path"][0]).size == (16, 16)
    # A user without refbench: plain diffusers loads the run's output (the UNet folder, or the
    # LoRA weights through load_lora_weights) and makes the same image from the same noise.
    from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel

    from refbench.toy.sampling import initial_noise

    pipe = (StableDiffusionXLPipeline if kind == "sdxl" else StableDiffusionPipeline).from_pretrained(str(tiny / kind))
    if lora:
        pipe.load_lora_weights(str(final))
        assert pipe.get_list_adapters()  # diffusers loads nothing, silently, from a folder without LoRA weights
    else:
        pipe.unet = UNet2DConditionModel.from_pretrained(str(final / "unet"))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    row = store.query(
        "select prompt, seed, image_path, guidance_scale from samples where run = 'refdpo' order by prompt limit 1"
    )
    latents = initial_noise(row["prompt"][0], int(row["seed"][0]), (4, 8, 8))[None]
    image = pipe(
        [row["prompt"][0]],
        latents=latents,
        guidance_scale=float(row["guidance_scale"][0]),
        num_inference_steps=2,
        height=16,
        width=16,
        output_type="np",
    ).images[0]
    made = np.asarray(Image.open(row["image_path"][0]), dtype=np.int16)
    assert np.abs((np.clip(image, 0, 1) * 255).round().astype(np.int16) - made).max() <= 1


def test_lora_reference_and_initial_model_share_the_base(tiny):
    """LoRA: the reference adapter starts at zero update, so reference == initial model; after the
    policy adapter moves, a sync makes the reference output equal the policy's; a reset restores
    the initial model exactly."""
    from diffusers import UNet2DConditionModel

    from refbench.training.modelset import POLICY, REFERENCE, LoraModelSet

    unet = UNet2DConditionModel.from_pretrained(str(tiny / "sd15" / "unet"))
    models = LoraModelSet(unet, reference_mode="sync", rank=4)
    x, t, hidden = torch.randn(2, 4, 8, 8), torch.tensor([10, 900]), torch.randn(2, 77, 32)[:, :32]

    def output(which):
        with torch.no_grad(), models.use(which) as module:
            return module(x, t, encoder_hidden_states=hidden).sample

    initial = output("initial")
    assert torch.equal(output(REFERENCE), initial)
    with torch.no_grad():
        for p in models.trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert not torch.allclose(output(POLICY), initial)
    models.sync_reference(1.0)
    assert torch.allclose(output(REFERENCE), output(POLICY))
    models.reset_reference()
    assert torch.equal(output(REFERENCE), initial)
    assert all(p.requires_grad for p in models.trainable_parameters())
    assert not any(p.requires_grad for n, p in unet.named_parameters() if ".reference." in n or "lora" not in n)


def test_sdxl_conditioning(tiny):
    """SDXL: both encoders' hidden states concatenated (32 + 32), the pooled projection (32), and
    time_ids (H, W, 0, 0, H, W) = (16, 16, 0, 0, 16, 16)."""
    from refbench.config import ModelConfig
    from refbench.training.backends import load_backend

    backend = load_backend(ModelConfig(kind="sdxl", pretrained=str(tiny / "sdxl"), resolution=16))
    cond = backend.encode_text(["a red circle", "two blue squares"])
    assert cond.hidden.shape[0] == 2 and cond.hidden.shape[-1] == 64
    assert cond.added["text_embeds"].shape == (2, 32)
    assert cond.added["time_ids"].tolist() == [[16.0, 16.0, 0.0, 0.0, 16.0, 16.0]] * 2
    latents = backend.encode_images(np.zeros((2, 16, 16, 3), dtype=np.uint8))
    assert latents.shape == (2, 4, 8, 8)


@pytest.mark.slow
def test_missing_model_folder_is_one_sentence(tmp_path, monkeypatch, capsys):
    """The preset's default data (Pick-a-Pic v2, withdrawn) is said first, so a local --data is given:
    the model is then checked before the data is read."""
    code, _, err = run_refbench(
        monkeypatch,
        capsys,
        "train",
        "--preset",
        "sd15",
        "--model",
        tmp_path / "nope",
        "--data",
        tmp_path,
        "--db",
        tmp_path / "db.duckdb",
        "--out",
        tmp_path / "runs",
    )
    assert code == 2
    assert "does not exist" in err and "Traceback" not in err
