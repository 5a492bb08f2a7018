"""The toy base model: components, save/load, tokenizer, sampling, resumable pretraining."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # also set by conftest; the tests must never reach a hub

import numpy as np
import pytest
import torch

from refbench.toy.model import (
    BASE_CHECKPOINT,
    build_components,
    encode_prompts,
    images_to_tensor,
    load_components,
    save_components,
    tensor_to_images,
    tokenize,
    toy_words,
)
from refbench.toy.prompts import all_prompts, prompt_set

PROMPT = "two red circles on a blue background"


@pytest.fixture(scope="module")
def fresh():
    return build_components(seed=0)


@pytest.fixture(scope="module")
def base():
    return load_components()


def test_forward_shapes(fresh):
    emb = encode_prompts(fresh, [PROMPT, ""])
    assert emb.shape == (2, fresh.tokenizer.model_max_length, fresh.unet.config.cross_attention_dim)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        out = fresh.unet(x, torch.tensor([10, 900]), encoder_hidden_states=emb).sample
    assert out.shape == x.shape
    cfg = fresh.noise_scheduler.config
    assert (cfg.beta_schedule, cfg.beta_start, cfg.beta_end, cfg.num_train_timesteps) == (
        "scaled_linear",
        0.00085,
        0.012,
        1000,
    )
    assert cfg.prediction_type == "epsilon"


def test_build_is_seeded_and_leaves_global_rng_alone(fresh):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    again = build_components(seed=0)
    assert torch.equal(torch.get_rng_state(), before)
    for a, b in zip(fresh.unet.parameters(), again.unet.parameters()):
        assert torch.equal(a, b)


def test_tokenizer_offline_one_token_per_word(fresh):
    tok = fresh.tokenizer
    ids = tok(PROMPT).input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert len(ids) == len(PROMPT.split()) + 2
    assert tok.decode(ids, skip_special_tokens=True) == PROMPT
    # Words outside the grammar still tokenize (byte fallback), never to <unk>.
    assert len(tok("zebra", add_special_tokens=False).input_ids) > 1
    longest = max((p.text for p in all_prompts()), key=lambda t: len(tok(t).input_ids))
    assert len(tok(longest).input_ids) <= tok.model_max_length
    assert tokenize(fresh, [PROMPT, ""]).shape == (2, tok.model_max_length)
    assert {"one", "circles", "background"} <= set(toy_words())


def test_save_load_round_trip(fresh, tmp_path):
    folder = save_components(fresh, tmp_path / "toy")
    for sub in (
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "scheduler/scheduler_config.json",
    ):
        assert (folder / sub).exists(), sub
    loaded = load_components(folder)
    fresh.unet.eval()
    fresh.text_encoder.eval()
    assert loaded.tokenizer(PROMPT).input_ids == fresh.tokenizer(PROMPT).input_ids
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outs = [
            c.unet(x, torch.tensor([5, 500]), encoder_hidden_states=encode_prompts(c, [PROMPT, ""])).sample
            for c in (fresh, loaded)
        ]
    assert torch.equal(outs[0], outs[1])
    strip = lambda cfg: {k: v for k, v in cfg.items() if not k.startswith("_")}  # noqa: E731
    assert strip(loaded.noise_scheduler.config) == strip(fresh.noise_scheduler.config)


def test_image_tensor_round_trip():
    imgs = np.random.default_rng(0).integers(0, 256, size=(3, 16, 16, 3), dtype=np.uint8)
    t = images_to_tensor(imgs)
    assert t.shape == (3, 3, 16, 16) and t.min() >= -1 and t.max() <= 1
    assert np.array_equal(tensor_to_images(t), imgs)
    assert images_to_tensor(imgs[0]).shape == (1, 3, 16, 16)


def test_committed_checkpoint_is_small_and_matches_the_builder(base, fresh):
    files = [p for p in BASE_CHECKPOINT.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 10 * 2**20
    assert list(base.unet.config.block_out_channels) == list(fresh.unet.config.block_out_channels)
    assert base.tokenizer.get_vocab() == fresh.tokenizer.get_vocab()
    assert all(p.dtype == torch.float32 for p in base.unet.parameters())
    # pretrain() saves build_components' scheduler: it must be the committed one.
    strip = lambda cfg: {k: v for k, v in cfg.items() if not k.startswith("_")}  # noqa: E731
    assert strip(base.noise_scheduler.config) == strip(fresh.noise_scheduler.config)


def test_sampling_deterministic_and_batch_independent(base):
    from refbench.toy.sampling import sample_images

    test_prompts = [p.text for p in prompt_set("toy-test")[:3]]
    prompts = [test_prompts[0], test_prompts[0], test_prompts[1], test_prompts[2]]
    seeds = [0, 1, 0, 0]
    kw = dict(num_inference_steps=8, batch_size=4)
    batch = sample_images(base, prompts, seeds, **kw)
    assert batch.dtype == np.uint8 and batch.shape == (4, 16, 16, 3)
    alone = sample_images(base, prompts[:1], seeds[:1], **kw)
    assert np.array_equal(alone[0], batch[0])  # same (prompt, seed), other batch partners
    reordered = sample_images(base, prompts[::-1], seeds[::-1], **kw)[::-1]
    assert np.array_equal(reordered, batch)
    assert not np.array_equal(batch[0], batch[1])  # another seed, another image
    # A unet override is used (here: the same weights, so the same images).
    assert np.array_equal(sample_images(base, prompts[:1], seeds[:1], unet=base.unet, **kw), alone)


def test_pretrain_resume_equals_uninterrupted(tmp_path):
    from refbench.toy.pretrain import STATE_FILE, pretrain

    kw = dict(steps=6, batch_size=2, lr=1e-3, seed=3, warmup=2, ema_decay=0.9, checkpoint_every=2, progress=False)
    full = pretrain(tmp_path / "full", **kw)
    state = pretrain(tmp_path / "split", stop_after=3, **kw)
    assert state.name == STATE_FILE and state.exists()
    resumed = pretrain(tmp_path / "split", resume=True, **kw)
    a, b = load_components(full), load_components(resumed)
    for module in ("unet", "text_encoder"):
        sa, sb = getattr(a, module).state_dict(), getattr(b, module).state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.allclose(sa[k], sb[k], atol=1e-6), (module, k)
    # And training moved the weights away from the initialisation.
    init = build_components(seed=3)
    assert any(not torch.equal(p, q) for p, q in zip(init.unet.parameters(), a.unet.parameters()))
    # Other settings with the same out_dir are refused rather than silently mixed.
    with pytest.raises(ValueError, match="other settings"):
        pretrain(tmp_path / "split", **{**kw, "lr": 2e-3})


def test_pretraining_batches_never_show_test_prompts():
    from refbench.toy.pretrain import _batch

    train = {p.text for p in prompt_set("toy-train")} | {""}
    texts = [t for step in range(20) for t in _batch(prompt_set("toy-train"), step, 0, 16, 0.1)[1]]
    assert set(texts) <= train
    assert "" in texts  # caption dropout happens
    images, texts2, _ = _batch(prompt_set("toy-train"), 5, 0, 4, 0.1)
    assert images.shape == (4, 3, 16, 16)
    assert torch.equal(images, _batch(prompt_set("toy-train"), 5, 0, 4, 0.1)[0])  # (seed, step) decides
