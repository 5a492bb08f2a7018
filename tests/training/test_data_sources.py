"""Named data sources (issue 27): each source's own layout, read into refbench's rows, checked
against tiny copies made in the test (tests/data_source_helpers.py) with hand-worked numbers."""

from __future__ import annotations

import json
import pickle

import data_source_helpers as make
import pyarrow.parquet as pq
import pytest

from refbench.config_layers import check_data_columns
from refbench.errors import ConfigError
from refbench.training.data import PreferencePairs
from refbench.training.data_sources import REGISTRY, check_data_source, open_source
from refbench.training.data_sources import index as index_module
from refbench.training.data_sources.index import iter_json_records, pairs_from_ranks
from refbench.training.sources import DataError


@pytest.fixture(autouse=True)
def _index_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("REFBENCH_DATA", str(tmp_path / "refbench-data"))


def index_rows(source) -> list[tuple]:
    """The pair index behind an annotation-file source: (image_0, image_1, label_0) rows."""
    table = pq.read_table(source.files[0])
    return list(zip(table["image_0"].to_pylist(), table["image_1"].to_pylist(), table["label_0"].to_pylist()))


def test_pairs_from_ranks_hand_worked():
    """3 images ranked [1, 2, 2]: a beats b, a beats c, b ties c. [3, 1, 2]: b > a, c > a, b > c."""
    assert pairs_from_ranks([1, 2, 2]) == [(0, 1, 1.0), (0, 2, 1.0), (1, 2, 0.5)]
    assert pairs_from_ranks([3, 1, 2]) == [(0, 1, 0.0), (0, 2, 0.0), (1, 2, 1.0)]
    assert pairs_from_ranks([1]) == []


def test_imagerewarddb_pairs_every_image_of_a_prompt(tmp_path):
    """Groups [1, 2, 2] (images 0-0, 0-1, 0-2) and [3, 1, 2, 4] (1-0 .. 1-3): 3 + 6 = 9 rows, one tie;
    screening keeps 8 and puts the better-ranked image first."""
    root = make.imagerewarddb(tmp_path / "ir")
    source = open_source(f"imagerewarddb:{root}")
    p = "images/train/train_1/{}.webp.png".format
    assert index_rows(source) == [
        (p("0-0"), p("0-1"), 1.0),
        (p("0-0"), p("0-2"), 1.0),
        (p("0-1"), p("0-2"), 0.5),
        (p("1-0"), p("1-1"), 0.0),
        (p("1-0"), p("1-2"), 0.0),
        (p("1-0"), p("1-3"), 1.0),
        (p("1-1"), p("1-2"), 1.0),
        (p("1-1"), p("1-3"), 1.0),
        (p("1-2"), p("1-3"), 1.0),
    ]
    pairs = PreferencePairs(source, resolution=16)
    assert len(pairs) == 8 and pairs.skipped.as_dict() == {"tie": 1}
    winner_first = [True, True, False, False, True, True, True, True]  # rows 0, 1, 3..8
    assert pairs.winner_is_0.tolist() == winner_first
    row = source.read_row(3, ("caption", "jpg_0", "jpg_1"))  # group 1: image 1-1 (rank 1) wins
    assert row["jpg_1"] == (root / p("1-1")).read_bytes() and row["caption"] == make.PROMPTS[1]


def test_imagerewarddb_refuses_a_split_prompt(tmp_path):
    import pyarrow as pa

    root = make.imagerewarddb(tmp_path / "ir")
    table = pq.read_table(root / "metadata-train.parquet")
    shuffled = table.take([0, 3, 1, 2, 4, 5, 6])  # prompt 0, prompt 1, prompt 0 again
    pq.write_table(pa.Table.from_pylist(shuffled.to_pylist()), root / "metadata-train.parquet")
    with pytest.raises(DataError, match="not contiguous"):
        open_source(f"imagerewarddb:{root}")


def test_hpdv2_train_and_test_layouts(tmp_path):
    """train.json: human_preference [1, 0] then [0, 1] alternately, so image a wins the even records
    and image b the odd ones; test.json: ranks [1, 2, 2] give 2 pairs and a tie."""
    root = make.hpdv2(tmp_path / "HPDv2")
    source = open_source(f"hpdv2:{root}")
    pairs = PreferencePairs(source, resolution=16)
    assert len(pairs) == 8 and pairs.skipped.as_dict() == {}
    assert pairs.winner_is_0.tolist() == [True, False] * 4
    row = source.read_row(1, ("jpg_0", "jpg_1"))
    assert row["jpg_1"] == (root / "train" / "00001_b.png").read_bytes()
    caption, winner, loser = pairs[1]
    assert caption == make.PROMPTS[1] and winner.shape == loser.shape == (16, 16, 3)
    test = PreferencePairs(open_source(f"hpdv2:{root}", "test"), resolution=16)
    assert len(test) == 2 and test.skipped.as_dict() == {"tie": 1}


def test_hpdv3_path1_is_preferred(tmp_path):
    root = make.hpdv3(tmp_path / "HPDv3")
    source = open_source(f"hpdv3:{root / 'train.json'}")
    pairs = PreferencePairs(source, resolution=16)
    assert len(pairs) == 8 and pairs.winner_is_0.all()
    assert source.read_row(5, ("jpg_0",))["jpg_0"] == (root / "images" / "5_1.png").read_bytes()


def test_open_image_preferences_chosen_is_the_winner(tmp_path):
    root = make.open_image_preferences(tmp_path / "oip")
    source = open_source(f"open-image-preferences:{root}")
    pairs = PreferencePairs(source, resolution=None)
    assert len(pairs) == 8 and pairs.winner_is_0.all()
    assert source.read_row(6, ("jpg_0", "jpg_1")) == {"jpg_0": make.image(706), "jpg_1": make.image(806)}


def test_column_mapped_parquet(tmp_path):
    """score 1 (even n) keeps good first, 0 (odd n) puts bad first, 0.5 (n = 3) is a tie; the rule
    preferred = image_1 makes every bad image the winner."""
    path = make.mapped_parquet(tmp_path / "prefs" / "p.parquet")
    columns = {"caption": "prompt", "image_0": "good", "image_1": "bad", "label_0": "score"}
    pairs = PreferencePairs(open_source(str(path), columns=columns), resolution=16)
    assert len(pairs) == 7 and pairs.skipped.as_dict() == {"tie": 1}
    assert pairs.rows.tolist() == [0, 1, 2, 4, 5, 6, 7]
    assert pairs.winner_is_0.tolist() == [True, False, True, True, False, True, False]
    clone = pickle.loads(pickle.dumps(pairs))  # as DataLoader workers get it: paths, no open handles
    assert clone.source.held_bytes() == 0 and clone[1][0] == pairs[1][0]
    assert (clone[1][1] == pairs[1][1]).all()
    with pytest.raises(DataError, match="^data.columns: only for the parquet source"):
        open_source(f"hpdv2:{tmp_path}", columns=columns)
    rule = {"caption": "prompt", "image_0": "good", "image_1": "bad", "preferred": "image_1"}
    flipped = PreferencePairs(open_source(f"parquet:{path}", columns=rule), resolution=16)
    assert len(flipped) == 8 and not flipped.winner_is_0.any()


@pytest.mark.parametrize(
    "columns, message",
    [
        ({"caption": "prompt", "image_0": "good", "image_1": "bad"}, "give a label column"),
        ({"caption": "prompt", "image_0": "good", "label_0": "score"}, "must name the column(s) image_1"),
        ({"caption": "prompt", "image_0": "good", "image_1": "nope", "label_0": "score"}, "lacks the column(s) nope"),
        ({"caption": "prompt", "image_0": "good", "image_1": "bad", "preferred": "left"}, "must be image_0 or image_1"),
    ],
)
def test_column_mapping_errors_are_one_line(tmp_path, columns, message):
    path = make.mapped_parquet(tmp_path / "p.parquet")
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        open_source(str(path), columns=columns)
    assert "\n" not in str(caught.value)


def test_config_checks_column_keys():
    check_data_columns({"caption": "prompt", "preferred": "image_0"})
    with pytest.raises(ConfigError, match=r"^data.columns: must have keys among caption, image_0, .*; got winner$"):
        check_data_columns({"winner": "x"})
    with pytest.raises(ConfigError, match=r"^data.columns: must name a column for caption; got 3$"):
        check_data_columns({"caption": 3})


def test_source_names_are_checked():
    with pytest.raises(DataError, match=r"unknown data source 'hpd'; known: pickapic-v2, hpdv2, hpdv3, "):
        open_source("hpd:/data")
    with pytest.raises(DataError, match="hpdv2: needs a location after the colon, e.g. hpdv2:/data/HPDv2"):
        open_source("hpdv2:")
    with pytest.raises(DataError, match="no .*train.json"):
        open_source("hpdv2:/nowhere/at/all")
    assert list(REGISTRY)[0] == "pickapic-v2" and {"hpdv2", "hpdv3", "imagerewarddb", "parquet"} <= set(REGISTRY)
    assert all(s.summary and s.layout and s.example.startswith(s.name) for s in REGISTRY.values())


def test_json_records_streamed_across_pieces(tmp_path, monkeypatch):
    """Pieces of 7 characters cut every record: the stream still reads the list as json.load does,
    and JSON Lines the same; the index is built once and reused while the file is unchanged."""
    records = [{"prompt": f"p{n} ,]}}[", "path1": f"a{n}", "path2": f"b{n}", "confidence": n / 10} for n in range(20)]
    array, lines = tmp_path / "a.json", tmp_path / "l.json"
    array.write_text(json.dumps(records, indent=2))
    lines.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    monkeypatch.setattr(index_module, "_CHUNK", 7)
    assert list(iter_json_records(array)) == records == list(iter_json_records(lines))
    (tmp_path / "bad.json").write_text('[{"a": 1}, {"b": ')
    with pytest.raises(DataError, match="is not a JSON list or JSON Lines file"):
        list(iter_json_records(tmp_path / "bad.json"))
    first = open_source(f"hpdv3:{array}").files[0]
    assert open_source(f"hpdv3:{array}").files[0] == first and len(list(first.parent.iterdir())) == 1


class _Data:
    def __init__(self, source, columns=None):
        self.source, self.columns = source, columns or {}


def test_a_withdrawn_hub_set_says_so_offline(tmp_path, monkeypatch):
    """Offline with no local copy: one line naming the withdrawal and the ways on; with a copy in the
    hub cache, nothing is said before loading."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    for name in ("yuvalkirstain/pickapic_v2", "yuvalkirstain/pickapic_v1"):
        with pytest.raises(DataError) as caught:
            check_data_source(_Data(name))
        text = str(caught.value)
        assert text.startswith(f"{name} was withdrawn from the Hugging Face Hub on 2025-04-30")
        for way in ("--data DIR", "refbench data list", "refbench make-pairs"):
            assert way in text
        assert "\n" not in text
    (tmp_path / "hub" / "datasets--yuvalkirstain--pickapic_v2").mkdir(parents=True)
    check_data_source(_Data("yuvalkirstain/pickapic_v2"))
    with pytest.raises(DataError, match="no file or folder /nowhere exists"):
        check_data_source(_Data("hpdv2:/nowhere"))
