"""The official recipe's pieces: caption dropout, flips and the official resize, the optimizer
choice, another VAE, the effective batch."""

import dataclasses
import io

import numpy as np
import pytest
import torch
from cli_helpers import run_refbench
from PIL import Image
from toy_helpers import config_for


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_flip_mirrors_and_the_coins_are_a_function_of_the_position():
    """A 2 x 3 image with columns 10, 20, 30: flipped, its columns read 30, 20, 10. The coins of
    a (seed, micro-step, slot) are the same at every call; over 2,000 slots about half are heads
    (binomial sd 22: 1,000 +- 100 is 4.5 sd)."""
    from refbench.training.data import decode_image, flips

    image = np.repeat(np.array([[[10, 10, 10], [20, 20, 20], [30, 30, 30]]], dtype=np.uint8), 2, axis=0)
    assert decode_image(png(image))[0, :, 0].tolist() == [10, 20, 30]
    assert decode_image(png(image), flip=True)[0, :, 0].tolist() == [30, 20, 10]
    assert flips(0, 5, 3) == flips(0, 5, 3)
    heads = sum(flips(0, step, slot)[0] for step in range(200) for slot in range(10))
    assert 900 <= heads <= 1100
    assert {flips(0, s, 0) for s in range(50)} == {(False, False), (False, True), (True, False), (True, True)}


def test_the_official_resize_is_bilinear_on_the_shorter_side_then_a_centre_crop():
    """A 4 x 8 image (rows of 0 and 255 alternating in blocks of 2 columns) resized to 2 px:
    torchvision's Resize(2, bilinear) makes it 2 x 4, CenterCrop(2) keeps columns 1-2. The result
    equals torchvision's own Compose of the two on the same PIL image."""
    from torchvision import transforms

    from refbench.training.data import decode_image

    array = np.zeros((4, 8, 3), dtype=np.uint8)
    array[:, 2:4] = 255
    array[:, 6:8] = 255
    expected = transforms.Compose(
        [transforms.Resize(2, interpolation=transforms.InterpolationMode.BILINEAR), transforms.CenterCrop(2)]
    )(Image.fromarray(array))
    assert np.array_equal(decode_image(png(array), 2), np.asarray(expected))


def test_flipped_batches_are_the_same_whatever_the_workers(toy_world):
    """With random flips on, 0 and 2 DataLoader workers give the same micro-batches (the coins
    follow the pair's position, not the worker), and flips do change some images."""
    from refbench.training.backends import load_backend
    from refbench.training.batches import BatchSource
    from refbench.training.data import load_preference_pairs

    config = config_for(toy_world)
    pairs, backend = load_preference_pairs(config), load_backend(config.model)
    sources = [
        BatchSource(pairs, backend, batch_size=8, seed=0, winners_only=False, random_flip=flip, num_workers=workers)
        for flip, workers in ((True, 0), (True, 2), (False, 0))
    ]
    for micro_step in (0, 3):
        flipped, flipped_workers, plain = (s.micro_batch(micro_step) for s in sources)
        assert torch.equal(flipped.x0, flipped_workers.x0)
        assert not torch.equal(flipped.x0, plain.x0)
        for row in range(flipped.x0.shape[0]):  # each image is itself or its mirror
            assert torch.equal(flipped.x0[row], plain.x0[row]) or torch.equal(flipped.x0[row], plain.x0[row].flip(-1))


def test_caption_dropout_gives_dropped_pairs_the_empty_prompt(toy_world, tmp_path):
    """Caption dropout 0.5: the pairs whose coin (from the 'caption-dropout' stream of the step)
    is below 0.5 get the empty prompt's text states, the others keep theirs; winner and loser
    share a pair's conditioning row. At 0 nothing changes."""
    from refbench.training.data import load_preference_pairs
    from refbench.training.seeding import step_generator
    from refbench.training.trainer import Trainer

    base = config_for(toy_world)
    config = dataclasses.replace(base, data=dataclasses.replace(base.data, caption_dropout=0.5))
    trainer = Trainer(config, load_preference_pairs(config), tmp_path / "run", None, progress=False)
    batch = trainer.batches.micro_batch(0)
    dropped = torch.rand(batch.num_pairs, generator=step_generator(0, "caption-dropout", 1, 0, 0)) < 0.5
    assert 0 < int(dropped.sum()) < batch.num_pairs  # 4 pairs: both kinds present for this seed
    out = trainer._drop_captions(batch, 1, 0)
    empty = trainer.backend.encode_text([""]).hidden[0]
    for row in range(batch.num_pairs):
        expected = empty if dropped[row] else batch.cond.hidden[row]
        assert torch.equal(out.cond.hidden[row], expected)
    assert out.x0 is batch.x0
    trainer.config = base  # caption_dropout 0
    assert trainer._drop_captions(batch, 1, 0) is batch


def test_adafactor_has_the_official_settings_and_8bit_needs_its_package():
    """train.py for SDXL: Adafactor(lr, weight_decay, clip_threshold=1.0, scale_parameter=False,
    relative_step=False). adamw8bit without bitsandbytes installed is one ConfigError line."""
    from transformers.optimization import Adafactor

    from refbench.config import load_config
    from refbench.errors import ConfigError
    from refbench.training.optimizers import make_optimizer

    parameters = [torch.nn.Parameter(torch.zeros(3))]
    training = load_config(preset="sdxl").training
    optimizer = make_optimizer(training, parameters, 2.048e-5)
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, Adafactor)
    assert (
        group["lr"],
        group["weight_decay"],
        group["clip_threshold"],
        group["scale_parameter"],
        group["relative_step"],
    ) == (2.048e-5, 0.01, 1.0, False, False)
    adamw = make_optimizer(load_config(preset="sd15").training, parameters, 1e-5)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["betas"] == (0.9, 0.999)
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        eight = dataclasses.replace(training, optimizer="adamw8bit")
        with pytest.raises(ConfigError, match="training.optimizer: adamw8bit needs the bitsandbytes package"):
            make_optimizer(eight, parameters, 1e-5)


def test_another_vae_is_loaded_from_model_vae(tmp_path):
    """model.vae names an AutoencoderKL folder: the backend's VAE has its weights (here the tiny
    pipeline's VAE with every weight + 1), not the pipeline's; it stays in fp32. A missing one is
    one line naming model.vae."""
    from diffusers import AutoencoderKL

    from refbench.config import load_config
    from refbench.errors import ConfigError
    from refbench.tiny import build_tiny_pipeline
    from refbench.training.backends import load_backend

    folder = build_tiny_pipeline(tmp_path / "sd15")
    other = AutoencoderKL.from_pretrained(str(folder / "vae"))
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(1.0)
    other.save_pretrained(str(tmp_path / "other-vae"))
    config = load_config(
        preset="sd15",
        overrides={"model": {"pretrained": str(folder), "vae": str(tmp_path / "other-vae"), "resolution": 16}},
    )
    backend = load_backend(config.model)
    loaded = dict(backend.vae.named_parameters())
    assert all(torch.equal(loaded[name], value) for name, value in other.named_parameters())
    assert backend.vae_dtype == torch.float32 and next(backend.vae.parameters()).dtype == torch.float32
    missing = dataclasses.replace(config.model, vae=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="model.vae: cannot load"):
        load_backend(missing)


@pytest.mark.slow
def test_an_effective_batch_that_does_not_divide_is_one_line(tmp_path, monkeypatch, capsys):
    """--effective-batch 6 with --batch-size 4: 6 is not a multiple of 4, refused before loading
    anything, in one line (the real entry point, in this process)."""
    code, _, err = run_refbench(
        monkeypatch,
        capsys,
        "train",
        "--effective-batch",
        "6",
        "--batch-size",
        "4",
        "--db",
        tmp_path / "db.duckdb",
        "--out",
        tmp_path / "runs",
    )
    assert code == 2
    assert err == "error: training.effective_batch: must be a multiple of training.batch_size (4); got 6"


@pytest.mark.slow
def test_a_path_that_is_not_there_says_so_and_that_it_was_tried_on_the_hub(tmp_path, monkeypatch, capsys):
    """`--data digits/train.parquet` (a typo of a local path, shaped like a hub id): one line that
    says no such file exists and that the name failed as a hub data set too; the same for a
    reward model's source and for --model."""
    import datasets

    from refbench.evaluation.metrics import MetricLoadError, load_scorer
    from refbench.training.data import DataError, open_pair_source

    monkeypatch.chdir(tmp_path)

    def offline(name, split):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        DataError,
        match=r"^no file or folder digits/train.parquet exists, and as a hub data set it "
        r"cannot be loaded \(split 'train'\): Couldn't reach",
    ) as error:
        open_pair_source("digits/train.parquet", "train")
    assert "\n" not in str(error.value)
    with pytest.raises(
        MetricLoadError,
        match=r"^pickscore: no such file or folder 'models/pickscore', and as a hub id "
        r"\(models/pickscore, file config.json\) it is not in the local hub cache",
    ):
        load_scorer("pickscore", "models/pickscore")
    from refbench.toy.pairs import build_pairs, write_pairs

    data = write_pairs(build_pairs(4, "train", seed=0), tmp_path / "pairs.parquet")
    monkeypatch.undo()  # datasets.load_dataset as installed for the command (the folder is left too)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_refbench(
        monkeypatch,
        capsys,
        "train",
        "--preset",
        "sd15",
        "--model",
        "models/sd15",
        "--data",
        data,
        "--db",
        tmp_path / "db.duckdb",
        "--out",
        tmp_path / "runs",
    )  # the real entry point, in this process, from tmp_path
    assert code == 2
    assert err.splitlines()[-1].startswith(
        "error: model.pretrained: cannot load models/sd15: no file or folder of that name exists, and as a hub id:"
    )
