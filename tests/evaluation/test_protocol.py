"""The pinned evaluation protocol: `refbench winrate` refuses samples made or scored differently, in one
line naming the difference, and prints the protocol above its table."""

from __future__ import annotations

import pytest

from refbench.errors import RefbenchError
from refbench.evaluation.generate import prompt_texts, sample_id
from refbench.evaluation.protocol import check_protocol, protocol_lines
from refbench.evaluation.winrates import compute_winrates
from refbench.store import Store

SHA_A, SHA_B = "a" * 64, "b" * 64
PROTOCOL = {
    "sampler": "toy DDIMScheduler",
    "num_steps": 50,
    "guidance_scale": 3.0,
    "height": 16,
    "width": 16,
    "prompt_set_sha256": "c" * 64,
}


def add(store, run, scores, *, weights=SHA_A, **protocol):
    """Samples of ``run`` on toy-test for the first len(scores) prompts (seed 0), scored ``human``."""
    prompts = prompt_texts("toy-test")[: len(scores)]
    fields = {**PROTOCOL, **protocol}
    store.upsert(
        "samples",
        [
            {
                "sample_id": sample_id(run, "toy-test", p, 0),
                "run": run,
                "prompt_set": "toy-test",
                "prompt": p,
                "seed": 0,
                "image_path": "x.png",
                **fields,
            }
            for p in prompts
        ],
    )
    store.upsert(
        "scores",
        [
            {
                "sample_id": sample_id(run, "toy-test", p, 0),
                "metric": "human",
                "value": v,
                "source": "builtin:refbench.toy.oracle",
                "weights_sha256": weights,
            }
            for p, v in zip(prompts, scores)
        ],
    )


def test_same_protocol_is_returned_and_printed(tmp_path):
    store = Store(tmp_path / "db.duckdb")
    add(store, "mine", [0.9, 0.1])
    add(store, "base", [0.5, 0.5])
    protocol = check_protocol(store, "mine", "base", "toy-test", ["human"])
    assert {k: protocol[k] for k in PROTOCOL} == PROTOCOL and protocol["seeds"] == [0]
    assert protocol["scores"] == {"human": ("builtin:refbench.toy.oracle", SHA_A)}
    assert protocol_lines(protocol, "toy-test") == [
        "protocol: toy DDIMScheduler, 50 steps, guidance 3.0, 16x16 px, prompt set toy-test (sha256 cccccccccccc), "
        "evaluation seeds 0",
        "  human: builtin:refbench.toy.oracle (sha256 aaaaaaaaaaaa)",
    ]


@pytest.mark.parametrize(
    "field, value, shown",
    [
        ("num_steps", 20, "num_steps 50 vs 20"),
        ("guidance_scale", 7.5, "guidance_scale 3.0 vs 7.5"),
        ("sampler", "StableDiffusionPipeline DDIMScheduler", "sampler toy DDIMScheduler vs StableDiffusionPipeline"),
        ("height", 32, "height 16 vs 32"),
        ("prompt_set_sha256", "d" * 64, "prompt_set_sha256 cccccccccccc vs dddddddddddd"),
    ],
)
def test_a_different_sampling_protocol_is_refused_naming_the_field(tmp_path, field, value, shown):
    store = Store(tmp_path / "db.duckdb")
    add(store, "mine", [0.9, 0.1])
    add(store, "base", [0.5, 0.5], **{field: value})
    with pytest.raises(
        RefbenchError,
        match="mine and base were sampled under different protocols on toy-test: " + shown.replace("(", r"\("),
    ) as error:
        compute_winrates("mine", "base", db=tmp_path / "db.duckdb", out_root=tmp_path, metrics=["human"], num_prompts=2)
    assert "\n" not in str(error.value)
    assert store.query("select count(*) as n from winrates")["n"][0] == 0  # nothing was written


def test_scores_from_different_weights_are_refused(tmp_path):
    store = Store(tmp_path / "db.duckdb")
    add(store, "mine", [0.9, 0.1])
    add(store, "base", [0.5, 0.5], weights=SHA_B)
    with pytest.raises(
        RefbenchError,
        match=r"human scores of mine and base come from different checkpoints: "
        r"builtin:refbench.toy.oracle \(aaaaaaaaaaaa\) vs builtin:refbench.toy.oracle \(bbbbbbbbbbbb\)",
    ):
        compute_winrates("mine", "base", db=tmp_path / "db.duckdb", out_root=tmp_path, metrics=["human"], num_prompts=2)


def test_one_run_sampled_two_ways_is_refused(tmp_path):
    store = Store(tmp_path / "db.duckdb")
    add(store, "mine", [0.9, 0.1])
    add(store, "base", [0.5, 0.5])
    with store.connect() as con:  # the second sample of mine re-made with 20 steps
        con.execute(
            "UPDATE samples SET num_steps = 20 WHERE run = 'mine' AND prompt = ?", [prompt_texts("toy-test")[1]]
        )
    with pytest.raises(
        RefbenchError,
        match=r"the samples of mine on toy-test were made under more than one protocol "
        r"\(num_steps: 20, 50\)",
    ):
        check_protocol(store, "mine", "base", "toy-test", ["human"])


def test_rows_without_a_recorded_protocol_are_not_held_against_the_other_side(tmp_path):
    """Samples written before the protocol was recorded (NULL) compare with recorded ones; the printed
    protocol says what is not recorded."""
    store = Store(tmp_path / "db.duckdb")
    add(store, "mine", [0.9, 0.1], num_steps=None, weights=None)
    add(store, "base", [0.5, 0.5], sampler=None, weights=None)
    protocol = check_protocol(store, "mine", "base", "toy-test", ["human"])
    assert protocol["num_steps"] == 50 and protocol["sampler"] == "toy DDIMScheduler"
    assert protocol_lines(protocol, "toy-test")[1] == "  human: source not recorded"


def test_generate_and_score_record_the_protocol(tmp_path):
    """Through the real commands on the toy world: every sample row records the sampler, the steps, the
    guidance, the size and the prompt set's sha256; every score row its source and a sha256."""
    import hashlib

    from refbench.evaluation.generate import generate
    from refbench.evaluation.score import score

    db = tmp_path / "db.duckdb"
    generate("base", prompt_set="toy-test", db=db, out_root=tmp_path, num_prompts=2, steps=3, progress=False)
    score("base", metrics="human", db=db, progress=False)
    samples = Store(db).query(
        "select sampler, num_steps, guidance_scale, height, width, prompt_set_sha256 from samples"
    )
    expected_sha = hashlib.sha256("\n".join(prompt_texts("toy-test")).encode()).hexdigest()
    assert samples.drop_duplicates().values.tolist() == [["toy DDIMScheduler", 3, 3.0, 16, 16, expected_sha]]
    scores = Store(db).query("select distinct source, weights_sha256 from scores")
    from pathlib import Path

    import refbench.toy.oracle as oracle

    assert scores.values.tolist() == [
        ["builtin:refbench.toy.oracle", hashlib.sha256(Path(oracle.__file__).read_bytes()).hexdigest()]
    ]
