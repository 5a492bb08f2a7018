"""Each named data source read at two sizes: peak memory must not grow with the rows (issue 27).

    python benchmarks/data_sources.py [--sizes 10000 80000] [--root /tmp/data-sources]
        [--out benchmarks/data_sources.json]    (also writes benchmarks/data_sources.md)

For every adapter of ``refbench/training/data_sources`` it writes a copy of SIZE preference rows
in the source's own layout (16 px noise JPEGs: embedded bytes in the parquet layouts, files on
disk shared by the rows in the layouts that annotate paths), then measures, in a fresh process
each (its own ru_maxrss, through a wrapper as in data_scale.py), a process that opens the source,
screens it and reads 64 random pairs: once on a cold start (the JSON / metadata layouts build
their pair index then) and once more with the index already built. The sources are measured side
by side in one run, sizes interleaved per source.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
POOL = 64


def jpegs(count: int = POOL, size: int = 16) -> list[bytes]:
    from PIL import Image

    rng, out = np.random.default_rng(0), []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="JPEG")
        out.append(buffer.getvalue())
    return out


def caption(n: int) -> str:
    return f"a photo of thing {n % 5_000} in the style of painter {n % 37}"


def pool_files(folder: Path, images: list[bytes]) -> list[str]:
    (folder / "pool").mkdir(parents=True, exist_ok=True)
    for k, data in enumerate(images):
        (folder / "pool" / f"{k}.jpg").write_bytes(data)
    return [f"pool/{k}.jpg" for k in range(len(images))]


def write_parquet(folder: Path, rows: int, columns, per_file: int = 5_000, row_group: int = 500) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, rows, per_file):
        numbers = range(start, min(rows, start + per_file))
        table = pa.table({name: [make(n) for n in numbers] for name, make in columns.items()})
        pq.write_table(
            table, folder / f"train-{start // per_file:05d}.parquet", row_group_size=row_group, use_dictionary=False
        )


def write_json(path: Path, records) -> None:
    with open(path, "w") as handle:
        handle.write("[\n")
        for k, record in enumerate(records):
            handle.write(("," if k else "") + json.dumps(record) + "\n")
        handle.write("]\n")


def build(kind: str, folder: Path, rows: int, images: list[bytes]) -> str:
    """A copy of `rows` refbench rows in `kind`'s layout; returns its data.source value."""
    pick = lambda n: images[n % POOL]  # noqa: E731
    if kind == "pickapic-v2":
        columns = {"caption": caption, "jpg_0": pick, "jpg_1": lambda n: pick(n + 1), "label_0": lambda n: float(n % 2)}
        write_parquet(folder, rows, columns)
        return f"pickapic-v2:{folder}"
    if kind == "open-image-preferences":
        columns = {
            "prompt": caption,
            "chosen": lambda n: {"bytes": pick(n), "path": None},
            "rejected": lambda n: {"bytes": pick(n + 1), "path": None},
        }
        write_parquet(folder / "data", rows, columns)
        return f"open-image-preferences:{folder}"
    if kind == "parquet":
        write_parquet(folder, rows, {"prompt": caption, "good": pick, "bad": lambda n: pick(n + 1)})
        return f"parquet:{folder}"
    if kind == "hpdv2":
        paths = pool_files(folder / "train", images)
        write_json(
            folder / "train.json",
            (
                {
                    "human_preference": [1, 0] if n % 2 else [0, 1],
                    "prompt": caption(n),
                    "file_path": [paths[n % POOL], paths[(n + 1) % POOL]],
                }
                for n in range(rows)
            ),
        )
        return f"hpdv2:{folder}"
    if kind == "hpdv3":
        paths = pool_files(folder, images)
        records = (
            {"prompt": caption(n), "path1": paths[n % POOL], "path2": paths[(n + 1) % POOL], "confidence": 0.97}
            for n in range(rows)
        )
        write_json(folder / "train.json", records)
        return f"hpdv3:{folder / 'train.json'}"
    if kind == "imagerewarddb":  # groups of 4 images ranked [1, 2, 2, 3]: 6 pairs (one tie) per prompt
        import pyarrow as pa
        import pyarrow.parquet as pq

        paths = pool_files(folder, images)
        groups = rows // 6
        table = pa.table(
            {
                "image_path": [paths[(4 * g + k) % POOL] for g in range(groups) for k in range(4)],
                "prompt_id": [f"{g:06d}" for g in range(groups) for _ in range(4)],
                "prompt": [caption(g) for g in range(groups) for _ in range(4)],
                "rank": [r for _ in range(groups) for r in (1, 2, 2, 3)],
            }
        )
        pq.write_table(table, folder / "metadata-train.parquet")
        return f"imagerewarddb:{folder}"
    raise ValueError(kind)


READER = """
import json, sys, time
import numpy as np
from refbench.training.data import PreferencePairs
from refbench.training.data_sources import open_source
if sys.argv[1] == "baseline":  # the imports alone: decoding brings torch and torchvision
    import torchvision.transforms.functional  # noqa: F401
    print("PAIRS 0 0")
    sys.exit(0)
started = time.perf_counter()
pairs = PreferencePairs(open_source(sys.argv[1], "train", json.loads(sys.argv[2])), resolution=16)
opened = time.perf_counter() - started
for index in np.random.default_rng(0).choice(len(pairs), 64, replace=False):
    assert pairs[int(index)] is not None
print("PAIRS", len(pairs), round(opened, 2))
"""


MAPPING = {"caption": "prompt", "image_0": "good", "image_1": "bad", "preferred": "image_0"}


def measured(source: str, env: dict) -> dict:
    wrapper = (
        "import resource, subprocess, sys; out = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(out.stdout + out.stderr[-2000:]); "
        "print('RESULT', out.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            wrapper,
            sys.executable,
            "-c",
            READER,
            source,
            json.dumps(MAPPING if source.startswith("parquet:") else {}),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **env},
    )
    result = [line for line in out.stdout.splitlines() if line.startswith("RESULT")][-1].split()
    if result[1] != "0":
        raise RuntimeError(f"{source}: {out.stdout[-2000:]}")
    pairs = [line for line in out.stdout.splitlines() if line.startswith("PAIRS")][-1].split()
    return {"pairs": int(pairs[1]), "open_seconds": float(pairs[2]), "peak_rss_mb": round(int(result[2]) / 1024, 1)}


KINDS = ["pickapic-v2", "hpdv2", "hpdv3", "imagerewarddb", "open-image-preferences", "parquet"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 80_000])
    parser.add_argument("--root", type=Path, default=Path("/tmp/data-sources"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "data_sources.json")
    args = parser.parse_args()
    images, result = jpegs(), {"sizes": args.sizes, "sources": {}}
    result["baseline_peak_rss_mb"] = measured("baseline", {})["peak_rss_mb"]
    print("baseline (imports only)", result["baseline_peak_rss_mb"], "MB", flush=True)
    for kind in KINDS:
        entry = result["sources"][kind] = {}
        for size in args.sizes:
            folder = args.root / f"{kind}-{size}"
            shutil.rmtree(folder, ignore_errors=True)
            source = build(kind, folder, size, images)
            env = {"REFBENCH_DATA": str(args.root / f"index-{kind}-{size}")}
            shutil.rmtree(env["REFBENCH_DATA"], ignore_errors=True)
            entry[str(size)] = {"cold": measured(source, env), "warm": measured(source, env)}
            print(kind, size, json.dumps(entry[str(size)]), flush=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(table(result))


def table(result: dict) -> str:
    small, large = (str(s) for s in result["sizes"][:2])
    lines = [
        "# Named data sources: peak memory against the number of rows (issue 27)",
        "",
        "`python benchmarks/data_sources.py` (figures in `data_sources.json`). Peak RSS of a fresh process that",
        "opens the source, screens every row and reads 64 random pairs; cold: the first open (the JSON and",
        "metadata layouts build their pair index then), warm: the index already built. A process that only",
        f"imports the loader and what decoding needs (torch, torchvision, PIL) peaks at {result['baseline_peak_rss_mb']} MB: the rest is the data's.",
        "",
        f"| source | pairs at {small} | pairs at {large} | peak MB cold {small} / {large} | peak MB warm {small} / {large} | open s warm {small} / {large} |",
        "|---|---|---|---|---|---|",
    ]
    for kind, entry in result["sources"].items():
        a, b = entry[small], entry[large]
        lines.append(
            f"| {kind} | {a['warm']['pairs']} | {b['warm']['pairs']} | {a['cold']['peak_rss_mb']} / {b['cold']['peak_rss_mb']} "
            f"| {a['warm']['peak_rss_mb']} / {b['warm']['peak_rss_mb']} | {a['warm']['open_seconds']} / {b['warm']['open_seconds']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
