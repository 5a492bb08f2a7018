"""Prompt sets: toy sets, every local file format laid out like the hub files, errors.

The hub is off (conftest sets HF_HUB_OFFLINE=1 and a temporary HF_HOME): the hub loaders
are only checked to fail with one line that says how to pass a local file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from refbench.errors import RefbenchError
from refbench.evaluation.prompt_sets import HPD_STYLES, PromptSetError, load_prompt_set, prompt_set_names
from refbench.toy.prompts import prompt_set

NAMES = ["toy-train", "toy-test", "toy-val", "pickapic-test", "hpdv2", "partiprompts"]


def test_names() -> None:
    assert prompt_set_names() == NAMES


def test_toy_sets() -> None:
    for name in ("toy-train", "toy-test"):
        prompts = load_prompt_set(name)
        assert prompts == [p.text for p in prompt_set(name)] and len(set(prompts)) == len(prompts)
    assert not set(load_prompt_set("toy-train")) & set(load_prompt_set("toy-test"))
    with pytest.raises(PromptSetError, match="takes no source"):
        load_prompt_set("toy-test", "/tmp/x.txt")


def test_unknown_name_one_line() -> None:
    with pytest.raises(ValueError) as err:
        load_prompt_set("parti")
    msg = str(err.value)
    assert "\n" not in msg and all(n in msg for n in NAMES)
    assert isinstance(err.value, RefbenchError)


@pytest.mark.parametrize(
    "name,repo,file",
    [("hpdv2", "zhwang/HPDv2", "benchmark/anime.json"), ("partiprompts", "nateraw/parti-prompts", "PartiPrompts.tsv")],
)
def test_offline_hub_one_line(name: str, repo: str, file: str) -> None:
    with pytest.raises(PromptSetError) as err:
        load_prompt_set(name)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{name}: cannot load {repo!r}") and "source=PATH" in msg
    home = Path(os.environ["REFBENCH_PROMPTS"])
    assert f"put {file}" in msg and f"in {home / name}/" in msg  # where to put the file


def test_pickapic_is_never_fetched_one_line() -> None:
    """The hub set is gone: no hub call, one line saying where a local copy goes."""
    with pytest.raises(PromptSetError) as err:
        load_prompt_set("pickapic-test")
    msg = str(err.value)
    home = Path(os.environ["REFBENCH_PROMPTS"])
    assert "\n" not in msg and "yuvalkirstain/pickapic_v2 is gone (since 2025-04-30)" in msg
    assert f"in {home / 'pickapic-test'}/" in msg and "data/test_unique-*.parquet" in msg


def test_local_prompts_folder_in_each_sets_layout(tmp_path: Path, monkeypatch) -> None:
    """With no source, each set is read from $REFBENCH_PROMPTS/NAME/ in its own hub layout, or NAME.EXT."""
    monkeypatch.setenv("REFBENCH_PROMPTS", str(tmp_path))
    data = tmp_path / "pickapic-test" / "data"
    data.mkdir(parents=True)
    pd.DataFrame({"caption": CAPTIONS, "ranking_id": range(6)}).to_parquet(data / "test_unique-00000-of-00001.parquet")
    assert load_prompt_set("pickapic-test") == UNIQUE
    expect = _hpd(tmp_path / "hpdv2" / "benchmark")
    assert load_prompt_set("hpdv2") == expect
    (tmp_path / "partiprompts.tsv").write_text("Prompt\tCategory\nbond\tAbstract\na red car\tVehicles\n")
    assert load_prompt_set("partiprompts") == ["bond", "a red car"]


def test_missing_local_file_one_line(tmp_path: Path) -> None:
    with pytest.raises(PromptSetError) as err:
        load_prompt_set("partiprompts", tmp_path / "PartiPrompts.tsv")
    assert "\n" not in str(err.value) and "no such file" in str(err.value) and "partiprompts" in str(err.value)


# ---- Pick-a-Pic ----------------------------------------------------------------

CAPTIONS = ["a cat", "a dog ", "a cat", "", "  a red car", "a dog"]  # duplicates, blanks, spaces
UNIQUE = ["a cat", "a dog", "a red car"]


def test_pickapic_parquet_hub_layout(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    df = pd.DataFrame({"caption": CAPTIONS, "jpg_0": [b"\x00"] * 6, "label_0": [1.0] * 6})
    df.iloc[:3].to_parquet(data / "test_unique-00000-of-00002-abc.parquet")
    df.iloc[3:].to_parquet(data / "test_unique-00001-of-00002-def.parquet")
    pd.DataFrame({"caption": ["train only"]}).to_parquet(data / "train-00000-of-00001.parquet")
    assert load_prompt_set("pickapic-test", tmp_path) == UNIQUE  # folder: only test_unique files
    assert load_prompt_set("pickapic-test", data / "test_unique-00000-of-00002-abc.parquet") == ["a cat", "a dog"]
    assert load_prompt_set(f"pickapic-test={tmp_path}") == UNIQUE  # the name=source form


@pytest.mark.parametrize("fmt", ["csv", "txt", "json", "jsonl"])
def test_pickapic_other_formats(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"captions.{fmt}"
    if fmt == "csv":
        pd.DataFrame({"id": range(6), "Caption": CAPTIONS}).to_csv(path, index=False)  # column case ignored
    elif fmt == "txt":
        path.write_text("\n".join(CAPTIONS) + "\n")
    elif fmt == "json":
        path.write_text(json.dumps([{"caption": c, "x": 1} for c in CAPTIONS]))
    else:
        path.write_text("\n".join(json.dumps(c) for c in CAPTIONS) + "\n")
    assert load_prompt_set("pickapic-test", str(path)) == UNIQUE


def test_prompt_none_stays_a_prompt(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("caption\nNone\nNA\na cat\n")
    assert load_prompt_set("pickapic-test", path) == ["None", "NA", "a cat"]


def test_wrong_column_one_line(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    pd.DataFrame({"a": ["x"], "b": ["y"]}).to_csv(path, index=False)
    with pytest.raises(PromptSetError) as err:
        load_prompt_set("pickapic-test", path)
    assert "\n" not in str(err.value) and "'caption'" in str(err.value) and "a, b" in str(err.value)


def test_unsupported_and_empty(tmp_path: Path) -> None:
    (tmp_path / "p.xlsx").write_text("x")
    with pytest.raises(PromptSetError, match="unsupported file"):
        load_prompt_set("partiprompts", tmp_path / "p.xlsx")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(PromptSetError, match="no prompts"):
        load_prompt_set("partiprompts", tmp_path / "empty.txt")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PromptSetError) as err:
        load_prompt_set("hpdv2", tmp_path / "bad.json")
    assert "\n" not in str(err.value) and "cannot read" in str(err.value)


# ---- HPDv2 ----------------------------------------------------------------------


def _hpd(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    expect = []
    for style in reversed(HPD_STYLES):  # written out of order: read in the benchmark's order
        prompts = [f"{style} prompt {i}" for i in range(3)] + ["shared prompt"]
        (folder / f"{style}.json").write_text(json.dumps(prompts))
    for style in HPD_STYLES:
        expect += [f"{style} prompt {i}" for i in range(3)] + ["shared prompt"]
    (folder / "drawbench.json").write_text(json.dumps(["not part of the benchmark"]))
    return expect


def test_hpdv2_folders(tmp_path: Path) -> None:
    expect = _hpd(tmp_path / "hub" / "benchmark")
    assert load_prompt_set("hpdv2", tmp_path / "hub") == expect  # hub layout
    assert load_prompt_set("hpdv2", tmp_path / "hub" / "benchmark") == expect  # flat folder
    assert len(expect) == 16 and expect.count("shared prompt") == 4  # as published: no dedup
    assert load_prompt_set("hpdv2", tmp_path / "hub" / "benchmark" / "photo.json")[0] == "photo prompt 0"


def test_hpdv2_single_files(tmp_path: Path) -> None:
    prompts = [f"p{i}" for i in range(5)]
    (tmp_path / "all.json").write_text(json.dumps({"prompt": prompts}))
    assert load_prompt_set("hpdv2", tmp_path / "all.json") == prompts
    (tmp_path / "all.txt").write_text("\n".join(prompts))
    assert load_prompt_set("hpdv2", tmp_path / "all.txt") == prompts


# ---- PartiPrompts ---------------------------------------------------------------


def test_partiprompts_tsv(tmp_path: Path) -> None:
    rows = [
        ("bond", "Abstract", "Basic", ""),
        ('A sign that says "Hello World"', "Text", "Writing", ""),
        ("bond", "Abstract", "Basic", "repeated"),
        ("a photo of a cat, 4k", "Animals", "Basic", ""),
    ]
    tsv = tmp_path / "PartiPrompts.tsv"
    tsv.write_text("Prompt\tCategory\tChallenge\tNote\n" + "".join("\t".join(r) + "\n" for r in rows))
    assert load_prompt_set("partiprompts", tsv) == [r[0] for r in rows]  # order kept, no dedup
    assert load_prompt_set("partiprompts", tmp_path) == [r[0] for r in rows]  # folder: finds the tsv
    pd.DataFrame({"Prompt": [r[0] for r in rows], "Category": [r[1] for r in rows]}).to_parquet(tmp_path / "p.parquet")
    assert load_prompt_set("partiprompts", tmp_path / "p.parquet") == [r[0] for r in rows]


# ---- defaults -------------------------------------------------------------------


def test_real_models_default_to_public_sets(tmp_path: Path) -> None:
    """`generate` / `winrate` without --prompts: the toy worlds' toy-test, and for every real model
    kind a set that is still on the hub (PartiPrompts), never the gone Pick-a-Pic test split."""
    from refbench.evaluation.generate import default_prompt_set
    from refbench.evaluation.prompt_sets import PROMPT_SET_SPECS
    from refbench.model_kinds import MODEL_KINDS
    from refbench.store import Store
    from refbench.training.backends import backend_class

    store = Store(tmp_path / "db.duckdb")
    for preset in ("sd15", "sdxl", "sd3", "sd35"):
        name = default_prompt_set("base", store, preset=preset)
        spec = PROMPT_SET_SPECS[name]
        assert (name, spec.repo, spec.off_hub) == ("partiprompts", "nateraw/parti-prompts", None)
    assert default_prompt_set("base", store, preset="toy") == "toy-test"
    assert default_prompt_set("base", store, preset="toy-flow") == "toy-test"
    assert {backend_class(kind).default_prompts for kind in MODEL_KINDS if not kind.startswith("toy")} == {
        "partiprompts"
    }
