"""`refbench data list|inspect` and training on each named source (issue 27), in-process."""

from __future__ import annotations

import json

import data_source_helpers as make
import pytest
from cli_helpers import run_refbench as refbench

from refbench.store import Store


@pytest.fixture(autouse=True)
def _index_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("REFBENCH_DATA", str(tmp_path / "refbench-data"))


def test_data_list_one_line_per_source(monkeypatch, capsys):
    code, out, err = refbench(monkeypatch, capsys, "data", "list")
    assert code == 0, err
    lines = out.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == ["pickapic-v2", "hpdv2", "hpdv3", "imagerewarddb", "open-image-preferences", "parquet"]
    assert "(e.g. hpdv2:/data/HPDv2)" in lines[1]


def test_data_inspect_counts(tmp_path, monkeypatch, capsys):
    """HPDv2 copy: 8 rows, all usable, no tie; captions are the 4 prompts twice each, of 19, 21, 20
    and 20 characters (min 19, median 20, mean 20, max 21); the 8 sampled pairs are a 24x24 image
    against a 20x20 one. ImageRewardDB copy: 9 rows (3 + 6 pairs), 8 usable, 1 tie."""
    root = make.hpdv2(tmp_path / "HPDv2")
    code, out, err = refbench(monkeypatch, capsys, "data", "inspect", f"hpdv2:{root}", "--json", "--no-progress")
    assert code == 0, err
    report = json.loads(out)
    assert report["source"] == "hpdv2" and report["rows"] == 8 and report["usable_pairs"] == 8
    assert report["ties"] == 0 and report["skips"] == {}
    assert report["caption_chars"] == {"min": 19, "median": 20.0, "mean": 20.0, "max": 21}
    assert report["image_sizes"] == {"24x24": 8, "20x20": 8}
    assert report["schema"] == {"caption": "caption", "image_0": "image_0", "image_1": "image_1", "label_0": "label_0"}
    ir = make.imagerewarddb(tmp_path / "ir")
    code, out, err = refbench(monkeypatch, capsys, "data", "inspect", f"imagerewarddb:{ir}", "--no-progress")
    assert code == 0, err
    assert "rows: 9\n" in out and "usable pairs: 8\n" in out and "ties: 1\n" in out
    path = make.mapped_parquet(tmp_path / "p.parquet")
    args = ["--column", "caption=prompt", "--column", "image_0=good", "--column", "image_1=bad"]
    code, out, err = refbench(monkeypatch, capsys, "data", "inspect", str(path), *args, "--column", "label_0=score")
    assert code == 0, err
    assert "rows: 8\n" in out and "usable pairs: 7\n" in out and "schema: caption: prompt, image_0: good" in out
    code, _, err = refbench(monkeypatch, capsys, "data", "inspect", "nosuch:/x")
    assert code == 2 and err.startswith("error: data.source: unknown data source 'nosuch'; known: pickapic-v2")


def _source(kind: str, tmp_path) -> tuple[str, list[str]]:
    """The --data value of a tiny copy of `kind`, and the extra flags it needs."""
    if kind == "hpdv2":
        return f"hpdv2:{make.hpdv2(tmp_path / 'HPDv2')}", []
    if kind == "hpdv3":
        return f"hpdv3:{make.hpdv3(tmp_path / 'HPDv3') / 'train.json'}", []
    if kind == "imagerewarddb":
        return f"imagerewarddb:{make.imagerewarddb(tmp_path / 'ir')}", []
    if kind == "open-image-preferences":
        return f"open-image-preferences:{make.open_image_preferences(tmp_path / 'oip')}", []
    if kind == "parquet-set":  # the same mapping from the command line, with the rule instead of a label
        mapping = {"caption": "prompt", "image_0": "good", "image_1": "bad", "preferred": "image_0"}
        sets = [arg for key, value in mapping.items() for arg in ("--set", f"data.columns.{key}={value}")]
        return f"parquet:{make.mapped_parquet(tmp_path / 'prefs.parquet')}", sets
    config = tmp_path / "columns.toml"  # a column-mapped parquet, named in a config file
    config.write_text('[data.columns]\ncaption = "prompt"\nimage_0 = "good"\nimage_1 = "bad"\nlabel_0 = "score"\n')
    return str(make.mapped_parquet(tmp_path / "prefs.parquet")), ["--config", str(config)]


@pytest.mark.parametrize(
    "kind", ["hpdv2", "hpdv3", "imagerewarddb", "open-image-preferences", "parquet", "parquet-set"]
)
def test_train_on_each_source(toy_world, tmp_path, monkeypatch, capsys, kind):
    """3 steps of refdpo on the toy world from each source; the stored config names the source."""
    data, extra = _source(kind, tmp_path)
    db = tmp_path / "db.duckdb"
    code, out, err = refbench(
        monkeypatch,
        capsys,
        "train",
        "--model",
        toy_world / "base",
        "--data",
        data,
        *extra,
        "--max-steps",
        "3",
        "--batch-size",
        "2",
        "--set",
        "training.monitor_size=2",
        "--db",
        db,
        "--out",
        tmp_path / "runs",
        "--no-progress",
    )
    assert code == 0, err
    run = Store(db).get_run("refdpo")
    assert run["status"] == "finished" and run["config"]["data"]["source"] == data
    if kind == "parquet":
        assert run["config"]["data"]["columns"]["caption"] == "prompt"
        assert "'tie': 1" in run["message"]
    if kind == "parquet-set":
        assert run["config"]["data"]["columns"]["preferred"] == "image_0" and "tie" not in run["message"]


def test_train_on_a_named_source_with_the_tiny_sd15_pipeline(tmp_path, monkeypatch, capsys):
    """The real-model path (a tiny random-weight SD1.5 built offline) on HPDv2's layout: 2 steps from
    images; then the latent cache built from the same source, 2 steps from it, resumed to 4."""
    from refbench.training.backends import backend_class

    backend_class("sd15").build_tiny(tmp_path / "sd15")
    data = f"hpdv2:{make.hpdv2(tmp_path / 'HPDv2')}"
    db = tmp_path / "db.duckdb"
    common = ["--preset", "sd15", "--model", tmp_path / "sd15", "--data", data, "--resolution", "16"]
    steps = ["--batch-size", "2", "--accumulation", "1", "--set", "training.monitor_size=2"]
    where = ["--db", db, "--out", tmp_path / "runs", "--no-progress"]
    code, _, err = refbench(
        monkeypatch, capsys, "train", *common, *steps, "--max-steps", "2", "--set", "data.num_workers=0", *where
    )
    assert code == 0, err
    assert Store(db).get_run("refdpo")["status"] == "finished"
    cache = tmp_path / "cache"
    code, out, err = refbench(monkeypatch, capsys, "cache-latents", *common, "--out", cache, "--no-progress")
    assert code == 0 and "latent cache:" in out, err
    config = tmp_path / "cached.toml"
    config.write_text(f'[data]\nlatent_cache = "{cache}"\nrandom_flip = false\nnum_workers = 0\n')
    cached = ["--config", config, "--set", "training.checkpoint_every=2", "--name", "cached"]
    code, _, err = refbench(monkeypatch, capsys, "train", *common, *steps, *cached, "--max-steps", "2", *where)
    assert code == 0, err
    code, _, err = refbench(monkeypatch, capsys, "train", "--name", "cached", "--resume", "--max-steps", "4", *where)
    assert code == 0, err
    run = Store(db).get_run("cached")
    assert run["status"] == "finished" and run["config"]["training"]["max_steps"] == 4
    assert run["config"]["data"]["source"] == data and run["config"]["data"]["latent_cache"] == str(cache)


def test_the_presets_default_data_is_gone_in_one_line(tmp_path, monkeypatch, capsys):
    """`refbench train --preset sd15` offline: the withdrawn Pick-a-Pic says so before any model is
    looked at (the preset's model is not on disk either, and that is not what is said)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    args = ["train", "--preset", "sd15", "--db", tmp_path / "db.duckdb", "--out", tmp_path / "runs", "--no-progress"]
    code, _, err = refbench(monkeypatch, capsys, *args)
    assert code == 2 and "\n" not in err
    assert err.startswith("error: yuvalkirstain/pickapic_v2 was withdrawn from the Hugging Face Hub on 2025-04-30")
    assert "refbench data list" in err and "refbench make-pairs" in err
