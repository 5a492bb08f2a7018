"""The on-disk latent cache on a tiny random-weight SD1.5 pipeline: built once, read by several
runs without decoding an image or loading the VAE, refused when its settings differ, resumed
after an interrupted build. The refbench commands run in this process through the real entry point
(``cli_helpers.run_refbench``); `accelerate launch` and the sweep's workers start processes."""

import json
import os
import subprocess
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_helpers import run_refbench
from launch_helpers import accelerate_launch

from refbench.store import Store

PARQUET = {"compression": "none", "use_dictionary": False, "write_statistics": False}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from refbench.tiny import build_tiny_pipeline
    from refbench.toy.pairs import build_pairs, write_pairs

    root = tmp_path_factory.mktemp("cache")
    build_tiny_pipeline(root / "sd15")
    write_pairs(build_pairs(12, "train", seed=5), root / "built.parquet")
    # Rewritten without compression, dictionaries or statistics, so that a copy whose image bytes
    # are replaced by garbage of the same length has the same size (the cache's data fingerprint).
    pq.write_table(pq.read_table(root / "built.parquet"), root / "pairs.parquet", **PARQUET)
    return root


def overrides(tiny, **data):
    return {
        "model": {"pretrained": str(tiny / "sd15"), "resolution": 16, "gradient_checkpointing": False},
        "data": {"source": str(tiny / "pairs.parquet"), "num_workers": 0, "random_flip": False, **data},
        "training": {
            "max_steps": 3,
            "batch_size": 4,
            "gradient_accumulation_steps": 1,
            "learning_rate": 1e-4,
            "scale_lr": False,
            "lr_warmup_steps": 0,
            "monitor_size": 2,
        },
    }


@pytest.fixture
def cli(monkeypatch, capsys):
    """`refbench ARGS` in this process through the real entry point, on one torch thread (as the
    launched processes' OMP_NUM_THREADS=1): returncode, stdout and stderr (stripped)."""
    import torch

    def call(*args):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            code, out, err = run_refbench(monkeypatch, capsys, *args)
        finally:
            torch.set_num_threads(threads)
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    return call


def build(tiny, folder, **data):
    from refbench.config import load_config
    from refbench.training.cache_build import build_latent_cache

    config = load_config(
        method="diff-dpo",
        preset="sd15",
        overrides=overrides(tiny, latent_cache=str(folder), latent_dtype="float32", **data),
    )
    return build_latent_cache(config, folder, progress=False)


@pytest.mark.slow
def test_cache_then_sweep_trains_two_runs_and_reads_no_image(tiny, tmp_path, cli):
    """`refbench cache-latents`, then `refbench sweep --config` with data.latent_cache: both runs
    train from the cache. The parquet file is then swapped for one whose every image is garbage of
    the same length (same captions, labels and file size, so the same data fingerprint): a run that
    decoded one image would count it unreadable, and one that decoded none reports no skip."""
    cache = tmp_path / "latents"
    made = cli(
        "cache-latents",
        "--preset",
        "sd15",
        "--model",
        str(tiny / "sd15"),
        "--data",
        str(tiny / "pairs.parquet"),
        "--resolution",
        "16",
        "--dtype",
        "float32",
        "--out",
        str(cache),
        "--no-progress",
    )
    assert made.returncode == 0, made.stderr[-2000:]
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["complete"] and meta["pairs"] == np.load(cache / "status.npy").size
    assert (np.load(cache / "status.npy") == 1).all()
    assert json.loads((cache / "captions.json").read_text())[0] == ""  # the empty prompt, cached once

    data = tmp_path / "garbage.parquet"
    table = pq.read_table(tiny / "pairs.parquet")
    for column in ("jpg_0", "jpg_1"):
        garbage = pa.array(
            [b"\x00" * len(v) for v in table.column(column).to_pylist()], type=table.schema.field(column).type
        )
        table = table.set_column(table.schema.get_field_index(column), column, garbage)
    pq.write_table(table, data, **PARQUET)
    os.replace(data, tmp_path / "pairs.parquet")
    assert (tmp_path / "pairs.parquet").stat().st_size == (tiny / "pairs.parquet").stat().st_size
    # The config the command printed trains as printed (the SD presets' random flip turned off),
    # with this test's small-run settings beside it.
    import tomllib

    printed = made.stdout.split("FILE holding:\n", 1)[1]
    assert "random_flip = false" in printed
    shared = tomllib.loads(printed)
    assert shared["data"] == {
        "source": str(tiny / "pairs.parquet"),
        "split": "train",
        "latent_cache": str(cache),
        "latent_dtype": "float32",
        "random_flip": False,
    }
    shared["data"]["num_workers"] = 0
    shared["model"]["gradient_checkpointing"] = False
    config = tmp_path / "shared.json"
    config.write_text(
        json.dumps(
            shared
            | {
                "training": {
                    "batch_size": 4,
                    "gradient_accumulation_steps": 1,
                    "scale_lr": False,
                    "lr_warmup_steps": 0,
                    "monitor_size": 2,
                }
            }
        )
    )
    # the same fingerprint with garbage images: point the run at the garbage copy under the original name
    os.replace(tiny / "pairs.parquet", tmp_path / "real.parquet")
    os.replace(tmp_path / "pairs.parquet", tiny / "pairs.parquet")
    try:
        swept = cli(
            "sweep",
            "--methods",
            "diff-dpo,refdpo",
            "--preset",
            "sd15",
            "--max-steps",
            "2",
            "--config",
            str(config),
            "--db",
            str(tmp_path / "db.duckdb"),
            "--out",
            str(tmp_path / "runs"),
            "--no-progress",
        )
    finally:
        os.replace(tiny / "pairs.parquet", tmp_path / "garbage-used.parquet")
        os.replace(tmp_path / "real.parquet", tiny / "pairs.parquet")
    assert swept.returncode == 0, swept.stdout[-1500:] + swept.stderr[-1500:]
    runs = Store(tmp_path / "db.duckdb").query("select name, status, message from runs order by name")
    assert runs["name"].tolist() == ["diff-dpo", "refdpo"] and set(runs["status"]) == {"finished"}
    assert all("unreadable" not in message for message in runs["message"])


def test_training_from_the_cache_matches_training_without_it_and_loads_no_vae(tiny, tmp_path, monkeypatch):
    """The cache holds the VAE posterior mean (deterministic) in float32, so 3 steps from the cache
    log the losses of 3 steps that encode every batch (to float rounding); with the cache the VAE
    is never loaded (loading it here raises)."""
    from diffusers import AutoencoderKL

    from refbench.config import load_config
    from refbench.training.run import run_training

    cache = build(tiny, tmp_path / "latents")
    losses = {}
    for name, data in (("plain", {}), ("cached", {"latent_cache": str(cache), "latent_dtype": "float32"})):
        if name == "cached":

            def refuse(*args, **kwargs):
                raise AssertionError("the VAE was loaded")

            monkeypatch.setattr(AutoencoderKL, "from_pretrained", refuse)
        config = load_config(method="refdpo", preset="sd15", name=name, overrides=overrides(tiny, **data))
        run_training(config, db=tmp_path / "db.duckdb", out_root=tmp_path / "runs", progress=False)
        losses[name] = Store(tmp_path / "db.duckdb").query(
            f"select loss, model_err_w, model_err_l from train_metrics where run = '{name}' order by step"
        )
    assert len(losses["plain"]) == 3
    # The first step sees the same inputs to float rounding: the same denoising errors. (Its loss
    # is ln 2 up to beta 5000 times a margin of float rounding, 1e-8, so it is not compared
    # tighter than the rest.) Later steps start from weights that Adam moved by about
    # lr * sign(gradient), where a gradient component near zero takes either sign under rounding.
    for column in ("model_err_w", "model_err_l"):
        assert losses["cached"][column][0] == pytest.approx(losses["plain"][column][0], rel=1e-5)
    assert losses["cached"]["loss"].tolist() == pytest.approx(losses["plain"]["loss"].tolist(), rel=2e-3)


def test_cached_batches_equal_encoded_batches(tiny, tmp_path):
    """The batch source gives the same micro-batch from the cache as from decoding and encoding:
    same pairs, latents and text states to float rounding."""
    from refbench.config import load_config
    from refbench.training.backends import load_backend
    from refbench.training.batches import BatchSource
    from refbench.training.data import load_preference_pairs
    from refbench.training.latent_cache import LatentCache

    cache = LatentCache(build(tiny, tmp_path / "latents"))
    config = load_config(method="diff-dpo", preset="sd15", overrides=overrides(tiny))
    pairs = load_preference_pairs(config)
    backend = load_backend(config.model)
    plain = BatchSource(pairs, backend, batch_size=4, seed=0, winners_only=False)
    cached = BatchSource(pairs, backend, batch_size=4, seed=0, winners_only=False, latent_cache=cache)
    for micro_step in (0, 1, 5):
        a, b = plain.micro_batch(micro_step), cached.micro_batch(micro_step)
        assert a.num_pairs == b.num_pairs == 4 and a.x0.shape == b.x0.shape == (8, 4, 8, 8)
        np.testing.assert_allclose(b.x0.numpy(), a.x0.numpy(), atol=1e-5)
        np.testing.assert_allclose(b.cond.hidden.numpy(), a.cond.hidden.numpy(), atol=1e-5)


def test_a_cache_made_with_other_settings_is_refused_in_one_line(tiny, tmp_path):
    """The cache was made at 16 px; a run at 32 px is refused, naming the resolution both ways; a
    build into the same folder from other rows (max_pairs 5) is refused, naming the data."""
    from refbench.config import load_config
    from refbench.training.latent_cache import CacheMismatch
    from refbench.training.run import run_training

    cache = build(tiny, tmp_path / "latents")
    config = load_config(
        method="diff-dpo",
        preset="sd15",
        overrides={
            **overrides(tiny, latent_cache=str(cache), latent_dtype="float32"),
            "model": {**overrides(tiny)["model"], "resolution": 32},
        },
    )
    with pytest.raises(CacheMismatch, match=r"resolution \('16' in the cache, '32' for this run\)") as error:
        run_training(config, db=tmp_path / "db.duckdb", out_root=tmp_path / "runs", progress=False)
    assert "\n" not in str(error.value)
    with pytest.raises(CacheMismatch, match=r"other settings: data \('[0-9a-f]+' in the cache"):
        build(tiny, cache, max_pairs=5)  # other rows: the data fingerprint differs


def test_an_interrupted_build_resumes_with_what_it_had_not_finished(tiny, tmp_path):
    """A build stopped half-way leaves chunks with status 0 and meta.complete false (simulated by
    resetting the second half of a finished cache and filling its latents with NaN). Building
    again fills exactly those rows, to the same values, and marks the cache complete."""
    from refbench.training import cache_build

    cache = build(tiny, tmp_path / "latents")
    reference = np.load(cache / "latents.npy").copy()
    latents = np.load(cache / "latents.npy", mmap_mode="r+")
    status = np.load(cache / "status.npy", mmap_mode="r+")
    half = len(status) // 2
    latents[half:] = np.nan
    status[half:] = 0
    latents.flush()
    status.flush()
    meta = json.loads((cache / "meta.json").read_text())
    (cache / "meta.json").write_text(json.dumps({**meta, "complete": False}))
    original_chunk = cache_build.CHUNK_PAIRS
    try:
        cache_build.CHUNK_PAIRS = 2  # first half done, second half not: chunks of 2 pairs
        build(tiny, cache)
    finally:
        cache_build.CHUNK_PAIRS = original_chunk
    assert json.loads((cache / "meta.json").read_text())["complete"]
    assert (np.load(cache / "status.npy") == 1).all()
    np.testing.assert_array_equal(np.load(cache / "latents.npy"), reference)


@pytest.mark.slow
def test_two_processes_split_the_build_and_make_the_same_cache(tiny, tmp_path, cli):
    """`accelerate launch --num_processes 2 -m refbench cache-latents`: the processes take chunks
    of 64 pairs in turn (150 pairs: chunks 0 and 2 to process 0, chunk 1 to process 1), writing
    their own rows of the shared arrays; the cache equals the one a single process builds."""
    from refbench.toy.pairs import build_pairs, write_pairs

    data = write_pairs(build_pairs(150, "train", seed=7), tmp_path / "pairs.parquet")
    args = [
        "cache-latents",
        "--preset",
        "sd15",
        "--model",
        str(tiny / "sd15"),
        "--data",
        str(data),
        "--resolution",
        "16",
        "--dtype",
        "float32",
        "--no-progress",
    ]
    two = subprocess.run(
        [
            *accelerate_launch(2),
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "refbench",
            *args,
            "--out",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    one = cli(*args, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-2000:]
    for name in ("latents.npy", "status.npy", "caption_index.npy", "text_hidden.npy", "text_status.npy"):
        np.testing.assert_allclose(np.load(tmp_path / "two" / name), np.load(tmp_path / "one" / name), atol=1e-6)
    assert json.loads((tmp_path / "two" / "meta.json").read_text())["complete"]


@pytest.mark.parametrize("preset", ["sd15", "sdxl", "sd3"])
def test_printed_cache_config_loads_on_a_flipping_preset(tmp_path, preset):
    """What `refbench cache-latents --preset P` prints loads with --preset P (whose random_flip is true),
    with the settings the cache was made with; the bare `data.latent_cache` it used to suggest is refused."""
    from refbench.config import load_config
    from refbench.errors import ConfigError
    from refbench.training.cache_build import cache_config_text

    assert load_config(preset=preset).data.random_flip  # the official recipe flips
    folder = tmp_path / "my cache"
    made_with = load_config(
        method="diff-dpo",
        preset=preset,
        overrides={
            "model": {"pretrained": "./my-model", "resolution": 256},
            "data": {"source": "./pairs.parquet", "latent_cache": str(folder), "random_flip": False},
        },
    )
    file = tmp_path / "cache.toml"
    file.write_text(cache_config_text(made_with, folder))
    loaded = load_config(method="refdpo", preset=preset, config_file=file)
    assert (loaded.data.latent_cache, loaded.data.random_flip, loaded.data.source) == (
        str(folder),
        False,
        "./pairs.parquet",
    )
    assert (loaded.model.pretrained, loaded.model.resolution) == ("./my-model", 256)
    assert loaded.model.mixed_precision == made_with.model.mixed_precision
    bare = tmp_path / "bare.toml"
    bare.write_text(f'[data]\nlatent_cache = "{folder}"\n')
    with pytest.raises(ConfigError, match="data.random_flip: must be false with data.latent_cache"):
        load_config(preset=preset, config_file=bare)
