"""`refbench generate NAME --unet SOURCE`: a released UNet (Diffusion-DPO's) in the base pipeline.

On a tiny random-weight SD1.5 pipeline (refbench.tiny) and a "released" UNet made from its own
by a seeded perturbation of every weight, saved as the mhdang repositories hold theirs (UNet
only, in unet/). Expected images come from plain diffusers: the pipeline loaded with that UNet,
DDIM, the same initial noise, guidance and steps. Nothing is downloaded: the hub repository is
a hand-written entry of the (temporary) hub cache, read offline.
"""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from refbench.errors import RefbenchError
from refbench.store import Store

STEPS, PROMPT_SET, RESOLUTION = 2, "toy-test", 16


@pytest.fixture(autouse=True)
def small_images(monkeypatch):
    """The base model at 16 px instead of the sd15 preset's 512 (the tiny VAE halves, not eighths)."""
    import importlib

    from refbench.config import load_config

    generate = importlib.import_module("refbench.evaluation.generate")

    def base_config(run, store, *, preset="toy", model=None):
        assert run == generate.BASE
        return load_config(preset=preset, overrides={"model": {"pretrained": model, "resolution": RESOLUTION}}), None

    monkeypatch.setattr(generate, "run_config", base_config)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from diffusers import UNet2DConditionModel

    from refbench.training.backends import backend_class

    root = tmp_path_factory.mktemp("released")
    backend_class("sd15").build_tiny(root / "sd15")
    unet = UNet2DConditionModel.from_pretrained(str(root / "sd15" / "unet"))
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    unet.save_pretrained(str(root / "dpo" / "unet"))  # the released layout: unet/ only
    return root


def _generate(tiny, tmp_path, run, **kwargs):
    from refbench.evaluation.generate import generate

    return generate(
        run,
        prompt_set=PROMPT_SET,
        db=tmp_path / "db.duckdb",
        out_root=tmp_path / "runs",
        num_prompts=1,
        steps=STEPS,
        progress=False,
        preset="sd15",
        model=str(tiny / "sd15"),
        **kwargs,
    )


def _plain_diffusers_image(tiny, unet_folder: Path, prompt: str, seed: int) -> np.ndarray:
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from refbench.toy.sampling import initial_noise

    pipe = StableDiffusionPipeline.from_pretrained(
        str(tiny / "sd15"), unet=UNet2DConditionModel.from_pretrained(str(unet_folder))
    )
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    resolution, scale = RESOLUTION, pipe.vae_scale_factor
    latents = initial_noise(prompt, seed, (4, resolution // scale, resolution // scale))[None]
    image = pipe(
        [prompt],
        latents=latents,
        guidance_scale=7.5,  # the official SD1.5 setting, generate's default for sd15
        num_inference_steps=STEPS,
        height=resolution,
        width=resolution,
        output_type="np",
    ).images[0]
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def test_released_unet_makes_the_image_plain_diffusers_makes(tiny, tmp_path):
    from PIL import Image

    counts = _generate(tiny, tmp_path, "dpo-tiny", unet=str(tiny / "dpo"))
    assert counts["generated"] == 1 and counts["prompt_set"] == PROMPT_SET
    _generate(tiny, tmp_path, "base")
    store = Store(tmp_path / "db.duckdb")
    rows = store.query("select * from samples order by run")
    assert rows["run"].tolist() == ["base", "dpo-tiny"]
    dpo = rows.iloc[1]
    weights = tiny / "dpo" / "unet" / "diffusion_pytorch_model.safetensors"
    assert dpo["denoiser_source"] == str(tiny / "dpo")
    assert dpo["denoiser_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert rows.iloc[0]["denoiser_source"] is None or rows["denoiser_source"].isna().iloc[0]
    made = np.asarray(Image.open(dpo["image_path"]))
    expected = _plain_diffusers_image(tiny, tiny / "dpo" / "unet", dpo["prompt"], int(dpo["seed"]))
    # Same process, same operations on the same noise: identical bytes (no tolerance).
    assert made.shape == (RESOLUTION, RESOLUTION, 3) and np.array_equal(made, expected)
    base = np.asarray(Image.open(rows.iloc[0]["image_path"]))
    assert np.abs(base.astype(int) - made.astype(int)).max() > 0  # the UNet was really swapped
    assert np.array_equal(base, _plain_diffusers_image(tiny, tiny / "sd15" / "unet", dpo["prompt"], 0))

    # A later call on the name reuses the recorded UNet: nothing to make, nothing mixed.
    again = _generate(tiny, tmp_path, "dpo-tiny")
    assert (again["generated"], again["present"]) == (0, 1)
    # Another UNet under that name (the pipeline folder: its unet/ subfolder) is refused in one line.
    with pytest.raises(RefbenchError, match=r"already has samples made with the denoiser .*dpo") as info:
        _generate(tiny, tmp_path, "dpo-tiny", unet=str(tiny / "sd15"))
    assert "\n" not in str(info.value)
    # --regenerate remakes the set with the other UNet (the set holds one UNet's samples again).
    remade = _generate(tiny, tmp_path, "dpo-tiny", unet=str(tiny / "sd15"), regenerate=True)
    assert remade["generated"] == 1
    rows = store.query("select denoiser_source, image_path from samples where run = 'dpo-tiny'")
    assert rows["denoiser_source"].tolist() == [str(tiny / "sd15")]
    assert np.array_equal(np.asarray(Image.open(rows["image_path"][0])), base)  # the base's own UNet
    # ... and filing a UNet's samples under 'base' is refused.
    with pytest.raises(RefbenchError, match="give the samples of that denoiser a name of their own"):
        _generate(tiny, tmp_path, "base", unet=str(tiny / "dpo"))


def test_released_unet_from_the_hub_cache_offline(tiny, tmp_path):
    """The mhdang repositories' layout (unet/config.json + weights), read from the hub cache offline."""
    from huggingface_hub import constants

    from refbench.evaluation.denoisers import resolve_denoiser

    repo = constants.HF_HUB_CACHE + "/models--mhdang--dpo-sd1.5-text2image-v1"
    commit = "0" * 40
    snapshot = Path(repo) / "snapshots" / commit
    shutil.copytree(tiny / "dpo" / "unet", snapshot / "unet", dirs_exist_ok=True)
    (Path(repo) / "refs").mkdir(parents=True, exist_ok=True)
    (Path(repo) / "refs" / "main").write_text(commit)
    folder = resolve_denoiser("mhdang/dpo-sd1.5-text2image-v1")
    assert folder.resolve() == (snapshot / "unet").resolve()
    assert json.loads((folder / "config.json").read_text())["cross_attention_dim"] == 32


def test_unknown_unet_is_one_line(tiny, tmp_path, monkeypatch, capsys):
    from cli_helpers import run_refbench

    from refbench.evaluation.denoisers import resolve_denoiser

    with pytest.raises(RefbenchError, match="HF_HUB_OFFLINE is set") as info:
        resolve_denoiser("nobody/no-such-unet")
    assert "\n" not in str(info.value) and "nobody/no-such-unet" in str(info.value)
    with pytest.raises(RefbenchError, match="no such file or folder './no-such-folder'"):
        resolve_denoiser("./no-such-folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RefbenchError, match="no config.json in it or in its unet/ folder"):
        resolve_denoiser(str(tmp_path / "empty"))
    # The command line (the real entry point, in this process): one error line, no traceback.
    code, _, err = run_refbench(
        monkeypatch,
        capsys,
        *["generate", "dpo-sd15", "--unet", "nobody/no-such-unet", "--preset", "sd15"],
        *["--db", tmp_path / "db.duckdb", "--out", tmp_path / "runs", "--no-progress"],
    )
    assert code != 0 and err and "\n" not in err, err[-2000:]  # err is stripped: one line
    assert err.startswith("error: --unet nobody/no-such-unet: no such folder here, and as a hub id")


def test_unet_of_another_model_family_is_refused(tiny, tmp_path):
    """A UNet whose text-embedding width is not the pipeline's (an SDXL UNet in SD1.5) fails in one line."""
    from diffusers import UNet2DConditionModel

    config = dict(UNet2DConditionModel.load_config(str(tiny / "sd15" / "unet")))
    config["cross_attention_dim"] = 64
    UNet2DConditionModel.from_config(config).save_pretrained(str(tmp_path / "other"))
    with pytest.raises(
        RefbenchError, match=r"does not fit this pipeline \(cross_attention_dim 64, the pipeline's 32\)"
    ):
        _generate(tiny, tmp_path, "other", unet=str(tmp_path / "other"))


def test_winrate_auto_with_unet_pairs_it_against_base(tiny, tmp_path):
    """`winrate --auto --unet`: the UNet's samples under RUN, the base's under 'base', paired by
    (prompt, seed); the protocol lines name the UNet. A colour oracle scores any RGB image."""
    from refbench.evaluation.winrates import compute_winrates, winrate_protocol

    db = tmp_path / "db.duckdb"
    Store(db)
    common = dict(db=db, out_root=tmp_path / "runs", prompt_set=PROMPT_SET, num_prompts=2, progress=False)
    results = compute_winrates(
        "dpo-tiny",
        "base",
        metrics=["colour"],
        auto=True,
        steps=STEPS,
        preset="sd15",
        model=str(tiny / "sd15"),
        unet=str(tiny / "dpo"),
        **common,
    )
    assert [(r.metric, r.n) for r in results] == [("colour", 2)]
    rows = Store(db).query("select run, denoiser_source from samples order by run, prompt")
    assert rows["run"].tolist() == ["base", "base", "dpo-tiny", "dpo-tiny"]
    assert rows["denoiser_source"].tolist()[2:] == [str(tiny / "dpo")] * 2 and rows["denoiser_source"][:2].isna().all()
    lines = winrate_protocol("dpo-tiny", "base", db=db, prompt_set=PROMPT_SET, metrics=["colour"])
    assert any(line.startswith(f"  dpo-tiny: UNet {tiny / 'dpo'} (sha256 ") for line in lines)
    assert not any("base: UNet" in line for line in lines)


def test_winrate_refuses_unet_without_auto(tmp_path):
    """Without --auto nothing is generated, so a --unet would be ignored: refused in one line instead."""
    from refbench.errors import RefbenchError
    from refbench.evaluation.winrates import compute_winrates

    with pytest.raises(RefbenchError, match=r"^--unet: only with --auto"):
        compute_winrates("dpo-sd15", "base", db=tmp_path / "none.duckdb", out_root=tmp_path, unet="some/unet")
