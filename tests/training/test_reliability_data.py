"""Reliability (issue 8), bad data: every malformed input is a counted skip or one error before training."""

import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from refbench.config import load_config
from refbench.store import Store
from refbench.training.data import REQUIRED_COLUMNS, DataError, PreferencePairs, decode_image, open_pair_source

RESOLUTION = 8


def png(value: int, size: int = 4) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


GOOD = {10: png(10), 200: png(200, size=6)}  # pixel value -> image: which image won is visible in its pixels
SCHEMA = pa.schema(
    [("caption", pa.string()), ("jpg_0", pa.binary()), ("jpg_1", pa.binary()), ("label_0", pa.float64())]
)

images = st.one_of(
    st.sampled_from(sorted(GOOD)),  # a readable image, by its pixel value
    st.none(),
    st.binary(max_size=40),
    st.binary(max_size=40).map(lambda tail: b"\x89PNG\r\n\x1a\n" + tail),  # a PNG header, then garbage
    st.integers(1, 60).map(lambda n: GOOD[10][:n]),  # a truncated PNG
)
rows = st.fixed_dictionaries(
    {
        "caption": st.one_of(st.none(), st.text(max_size=8), st.sampled_from(["", "   ", "a red circle"])),
        "jpg_0": images,
        "jpg_1": images,
        "label_0": st.one_of(
            st.none(), st.sampled_from([0.0, 0.5, 1.0]), st.floats(allow_nan=True, allow_infinity=True)
        ),
    }
)


def to_table(items: list[dict]) -> pa.Table:
    def encode(image):
        return GOOD[image] if isinstance(image, int) else image

    return pa.table(
        {
            "caption": [r["caption"] for r in items],
            "jpg_0": [encode(r["jpg_0"]) for r in items],
            "jpg_1": [encode(r["jpg_1"]) for r in items],
            "label_0": [r["label_0"] for r in items],
        },
        schema=SCHEMA,
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(rows, max_size=10))
def test_malformed_rows_are_counted_skips_or_one_data_error(items):
    """Any mix of null, empty and odd captions, labels outside {0, 0.5, 1} (NaN, Inf, null), and
    null, random, PNG-headed or truncated image bytes: the loader keeps exactly the rows with a
    caption and a label of 0 or 1, counts every other row once by reason, returns None for a pair
    with an unreadable image (counted once, however often it is asked for), puts the winner
    first, and raises nothing but one DataError line when no row is usable."""
    usable = [r for r in items if isinstance(r["caption"], str) and r["caption"].strip() and r["label_0"] in (0.0, 1.0)]
    try:
        pairs = PreferencePairs(to_table(items), resolution=RESOLUTION)
    except DataError as error:
        assert not usable and "\n" not in str(error) and str(error).startswith("no usable preference pairs")
        return
    assert len(pairs) == len(usable)
    load_skips = pairs.skipped.as_dict()
    assert sum(load_skips.values()) == len(items) - len(usable)
    assert load_skips.get("tie", 0) == sum(
        1 for r in items if r["label_0"] == 0.5 and isinstance(r["caption"], str) and r["caption"].strip()
    )
    unreadable = 0
    for index, row in enumerate(usable):
        item = pairs[index]
        assert pairs[index] is item or (item is not None and pairs[index] is not None)
        both_good = isinstance(row["jpg_0"], int) and isinstance(row["jpg_1"], int)
        if item is None:
            assert not both_good
            unreadable += 1
            continue
        caption, winner, loser = item
        assert caption == row["caption"]
        assert winner.shape == loser.shape == (RESOLUTION, RESOLUTION, 3) and winner.dtype == np.uint8
        if both_good:
            expected = row["jpg_0"] if row["label_0"] == 1.0 else row["jpg_1"]
            assert abs(int(winner[0, 0, 0]) - expected) <= 1
    assert pairs.skipped.counts["unreadable image"] == unreadable
    collated = PreferencePairs.collate([pairs[i] for i in range(len(pairs))])
    assert (collated is None) == (unreadable == len(usable))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    columns=st.lists(st.sampled_from(REQUIRED_COLUMNS + ("extra",)), unique=True),
    label_type=st.sampled_from([pa.float64(), pa.int64(), pa.string()]),
    n_rows=st.integers(0, 3),
)
def test_malformed_files_are_one_data_error_or_usable(columns, label_type, n_rows):
    """Parquet files with any subset of the columns, a label column of another type, or no rows:
    either a table the loader uses, or one DataError line naming what is wrong."""
    values = {
        "caption": pa.array(["a cat"] * n_rows),
        "jpg_0": pa.array([GOOD[10]] * n_rows),
        "jpg_1": pa.array([GOOD[200]] * n_rows),
        "extra": pa.array([1] * n_rows),
        "label_0": pa.array([1] * n_rows).cast(label_type) if label_type != pa.string() else pa.array(["1"] * n_rows),
    }
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pairs.parquet"
        pq.write_table(pa.table({c: values[c] for c in columns}) if columns else pa.table({}), path)
        try:
            pairs = PreferencePairs(open_pair_source(path), resolution=RESOLUTION)
        except DataError as error:
            message = str(error)
            assert "\n" not in message
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                assert f"lacks the column(s) {', '.join(missing)}" in message
            else:
                assert message.startswith("no usable preference pairs")
                assert n_rows == 0 or label_type == pa.string()  # "1" is not the number 1
            return
        # images are read by row when needed: while the file is still there
        assert set(REQUIRED_COLUMNS) <= set(columns) and len(pairs) == n_rows and label_type != pa.string()
        assert pairs[0][1][0, 0, 0] == 10


HEADERS = [
    b"GIF89a",
    b"II*\x00",
    b"BM",
    b"\xff\xd8\xff\xe0",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"P6\n",
    b"qoif",
    GOOD[200][:33],
]
BOMB = b"qoif" + (65536).to_bytes(4, "big") * 2 + b"\x03\x00"  # 16 bytes that claim 4.3e9 pixels


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.tuples(st.sampled_from(HEADERS), st.binary(max_size=80)).map(b"".join)))
@example(BOMB)
def test_decode_image_turns_any_bytes_into_an_image_or_a_value_error(data):
    """PIL raises many kinds of errors on broken files besides OSError (DecompressionBombError for
    a 16-byte header that claims a huge image, SyntaxError, struct.error...); decode_image turns
    every one into ValueError, which the loader counts as a skip."""
    try:
        image = decode_image(data, RESOLUTION)
    except ValueError as error:
        assert str(error).startswith("not a readable image")
    else:
        assert image.shape == (RESOLUTION, RESOLUTION, 3)


# -- through a training run ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_world(tmp_path_factory):
    from refbench.toy.model import build_components, save_components
    from refbench.toy.pairs import build_pairs

    root = tmp_path_factory.mktemp("toy")
    save_components(build_components(seed=0), root / "base")
    return root, build_pairs(16, "train", seed=0).select(list(REQUIRED_COLUMNS))


def messy(table: pa.Table) -> pa.Table:
    """16 toy rows, made web-like: 1 empty caption, 2 labels outside {0, 0.5, 1}, 1 tie forced,
    2 corrupt images in otherwise usable rows."""
    rows = table.to_pylist()
    rows[0]["caption"] = " "
    rows[1]["label_0"], rows[2]["label_0"] = 2.0, float("nan")
    rows[3]["label_0"] = 0.5
    rows[4]["jpg_0"] = b"\x89PNG\r\n\x1a\n broken"
    rows[5]["jpg_1"] = rows[5]["jpg_1"][:40]
    for row in rows[4:]:
        row["label_0"] = 1.0 if row["label_0"] == 0.5 else row["label_0"]
    return pa.Table.from_pylist(rows, schema=table.schema)


def run(world, tmp_path, table_or_path, **training):
    from refbench.training.run import run_training

    root, _ = world
    path = table_or_path
    if isinstance(table_or_path, pa.Table):
        path = tmp_path / "data.parquet"
        pq.write_table(table_or_path, path)
    config = load_config(
        method="diff-dpo",
        overrides={
            "model": {"pretrained": str(root / "base")},
            "data": {"source": str(path)},
            "training": {"max_steps": 3, "batch_size": 4, "monitor_size": 2, **training},
        },
    )
    return run_training(config, db=tmp_path / "db.duckdb", out_root=tmp_path / "runs", progress=False)


def test_skipped_rows_are_reported_at_the_end_and_stored(toy_world, tmp_path, capsys):
    """3 steps of 4 pairs cover all 12 usable pairs; the 2 with a corrupt image are skipped from
    the batches and counted once each, with the rows dropped on load, in the run's message and
    on the last line the run prints."""
    run(toy_world, tmp_path, messy(toy_world[1]))
    expected = "data skips: {'empty caption': 1, 'label outside {0, 0.5, 1}': 2, 'tie': 1, 'unreadable image': 2}"
    run_row = Store(tmp_path / "db.duckdb").get_run("diff-dpo")
    assert run_row["status"] == "finished" and run_row["message"] == f"0 steps skipped (0 non-finite); {expected}"
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"diff-dpo: 0 steps skipped (0 non-finite); {expected}"


@pytest.mark.parametrize("case", ["not parquet", "missing column", "empty", "only unusable rows", "no readable image"])
def test_unusable_data_is_one_error_before_training(toy_world, tmp_path, case):
    """Each stops before the first step with one DataError line: no run row, no checkpoint."""
    table = toy_world[1]
    data = {
        "not parquet": lambda: (
            (tmp_path / "data.parquet").write_bytes(b"caption,jpg_0\nPAR1 no") and tmp_path / "data.parquet"
        ),
        "missing column": lambda: table.drop_columns(["jpg_1"]),
        "empty": lambda: table.slice(0, 0),
        "only unusable rows": lambda: table.set_column(3, "label_0", pa.array([0.5] * table.num_rows)),
        "no readable image": lambda: table.set_column(1, "jpg_0", pa.array([b"not an image"] * table.num_rows)),
    }[case]()
    match = {
        "not parquet": "is not a readable parquet file",
        "missing column": r"lacks the column\(s\) jpg_1",
        "empty": "no usable preference pairs .*the data is empty",
        "only unusable rows": r"no usable .*'tie': 16",
        "no readable image": r"none of the first \d+ usable pairs has readable images",
    }[case]
    with pytest.raises(DataError, match=match) as error:
        run(toy_world, tmp_path, data)
    assert "\n" not in str(error.value)
    assert Store(tmp_path / "db.duckdb").query("select count(*) from runs").iloc[0, 0] == 0
    assert not (tmp_path / "runs" / "diff-dpo" / "checkpoint").exists()


def test_bad_data_from_the_command_line_is_one_line(toy_world, tmp_path, monkeypatch, capsys):
    from refbench.cli.app import main

    (tmp_path / "data.parquet").write_text("not parquet")
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "refbench",
            "train",
            "--model",
            str(toy_world[0] / "base"),
            "--data",
            str(tmp_path / "data.parquet"),
            "--db",
            str(tmp_path / "db.duckdb"),
            "--out",
            str(tmp_path / "runs"),
            "--no-progress",
        ],
    )
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"error: {tmp_path / 'data.parquet'} is not a readable parquet file")
