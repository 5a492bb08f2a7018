"""The preference-pair loader: winner first, ties dropped and counted, bad rows skipped and counted."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from refbench.training.data import DataError, PreferencePairs, decode_image, open_pair_source


def png(value: int, size: int = 4) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write(tmp_path, rows, name="pairs.parquet"):
    path = tmp_path / name
    pq.write_table(pa.table({k: [r[k] for r in rows] for k in rows[0]}), path)
    return path


def row(caption="a cat", first=10, second=20, label=1.0):
    return {
        "caption": caption,
        "jpg_0": png(first) if isinstance(first, int) else first,
        "jpg_1": png(second) if isinstance(second, int) else second,
        "label_0": label,
    }


def test_winner_first_and_skips_counted(tmp_path):
    """Rows: label 1 (image 0 wins), label 0 (image 1 wins), a tie, an empty caption, label 2,
    and a corrupt image. Kept: 3 pairs (the corrupt one is found on access); winners carry
    pixel values 10, 30, 50."""
    rows = [
        row("a", 10, 20, 1.0),
        row("b", 40, 30, 0.0),
        row("c", 1, 2, 0.5),
        row("", 1, 2, 1.0),
        row("d", 1, 2, 2.0),
        row("e", 50, b"\x89PNG broken", 1.0),
    ]
    pairs = PreferencePairs(open_pair_source(write(tmp_path, rows)))
    assert len(pairs) == 3
    assert pairs.skipped.as_dict() == {"empty caption": 1, "label outside {0, 0.5, 1}": 1, "tie": 1}
    caption, winner, loser = pairs[0]
    assert caption == "a" and winner[0, 0, 0] == 10 and loser[0, 0, 0] == 20
    caption, winner, loser = pairs[1]
    assert caption == "b" and winner[0, 0, 0] == 30 and loser[0, 0, 0] == 40
    assert pairs[2] is None
    assert pairs.skipped.counts["unreadable image"] == 1
    captions, winners, losers = PreferencePairs.collate([pairs[0], pairs[2], pairs[1]])
    assert captions == ["a", "b"] and winners.shape == (2, 4, 4, 3) and losers[:, 0, 0, 0].tolist() == [20, 40]


def test_resize_to_resolution():
    """An 8 x 4 image resized to 2 px: shorter side 4 -> 2 (scale 0.5), 4 x 2, centre crop 2 x 2."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 8, 3), 200, dtype=np.uint8)).save(buffer, format="PNG")
    image = decode_image(buffer.getvalue(), size=2)
    assert image.shape == (2, 2, 3) and image.dtype == np.uint8 and abs(int(image[0, 0, 0]) - 200) <= 1


def test_unusable_sources_are_one_error(tmp_path):
    with pytest.raises(DataError, match="preference data not found: no file or folder .*missing.parquet exists"):
        open_pair_source(tmp_path / "missing.parquet")
    not_parquet = tmp_path / "text.parquet"
    not_parquet.write_text("caption,jpg_0\n")
    with pytest.raises(DataError, match="is not a readable parquet file"):
        open_pair_source(not_parquet)
    no_label = write(tmp_path, [{"caption": "a", "jpg_0": png(1), "jpg_1": png(2)}], "nolabel.parquet")
    with pytest.raises(DataError, match="lacks the column\\(s\\) label_0"):
        open_pair_source(no_label)
    only_ties = write(tmp_path, [row(label=0.5), row(label=0.5)], "ties.parquet")
    with pytest.raises(DataError, match="no usable preference pairs .*'tie': 2"):
        PreferencePairs(open_pair_source(only_ties))
    with pytest.raises(DataError, match="no parquet files"):
        open_pair_source(tmp_path / "empty_dir" if (tmp_path / "empty_dir").mkdir() is None else None)


def test_folder_of_parquet_and_max_pairs(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write(folder, [row("a"), row("b")], "part-0.parquet")
    write(folder, [row("c"), row("d")], "part-1.parquet")
    source = open_pair_source(folder)
    assert source.num_rows == 4
    pairs = PreferencePairs(source, max_pairs=3)
    assert [pairs.caption(i) for i in range(len(pairs))] == ["a", "b", "c"]


def test_excluded_prompts_are_skipped_before_max_pairs(tmp_path):
    """Captions a, b, a, c, d (labels 1, 0, 1, 1, 0) with "a" held out: rows 1, 3, 4 are usable, and
    max_pairs 2 keeps rows 1 and 3; the two "a" rows before them are skips of their own reason."""
    import pyarrow as pa

    from refbench.training.data import PreferencePairs, excluded_prompts

    table = pa.table(
        {"caption": list("abacd"), "jpg_0": [b"x"] * 5, "jpg_1": [b"y"] * 5, "label_0": [1.0, 0.0, 1.0, 1.0, 0.0]}
    )
    held = tmp_path / "held.txt"
    held.write_text("a\n\n")
    pairs = PreferencePairs(table, max_pairs=2, exclude=excluded_prompts(str(held)))
    assert pairs.rows.tolist() == [1, 3] and pairs.winner_is_0.tolist() == [False, True]
    assert pairs.skipped.as_dict() == {"held-out prompt": 2}
    assert len(excluded_prompts("toy-val")) == 42


def test_an_unreadable_exclusion_list_is_one_line(tmp_path):
    from refbench.training.data import excluded_prompts
    from refbench.training.sources import DataError

    with pytest.raises(DataError, match="data.exclude_prompts: .* is neither a toy prompt set"):
        excluded_prompts(str(tmp_path / "missing.txt"))
