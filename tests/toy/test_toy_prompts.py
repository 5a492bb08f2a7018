"""Tests of the toy prompt grammar and its train/test split."""

from __future__ import annotations

import pytest

from refbench.toy.prompts import (
    BACKGROUNDS,
    COLOURS,
    COUNTS,
    HELD_OUT_PAIRS,
    PROMPT_SETS,
    SHAPES,
    ToyPrompt,
    all_prompts,
    parse_prompt,
    prompt_set,
)


def test_grammar_size() -> None:
    """3 counts x 6 colours x 3 shapes x 5 backgrounds = 270 combinations, minus the
    ones whose colour equals the background: blue and green are both colours and
    backgrounds, 2 x 3 counts x 3 shapes = 18 skipped -> 252."""
    prompts = all_prompts()
    assert len(prompts) == 252
    assert len(set(prompts)) == len(prompts)
    assert all(p.colour != p.background for p in prompts)
    assert all_prompts() == prompts  # deterministic order


def test_splits_disjoint_and_cover() -> None:
    """Held-out pairs (red, triangle), (blue, square), (yellow, circle) cover
    3 x 5 + 3 x 4 + 3 x 5 = 42 prompts (blue has only 4 backgrounds) -> 42 / 252 = 16.7 %."""
    train, test = prompt_set("toy-train"), prompt_set("toy-test")
    assert set(train).isdisjoint(test)
    assert set(train) | set(test) == set(all_prompts())
    assert len(test) == 42 and len(train) == 210
    assert 0.10 <= len(test) / len(all_prompts()) <= 0.25
    assert {(p.colour, p.shape) for p in test} == set(HELD_OUT_PAIRS)
    # compositional: every colour and every shape still appears in training
    assert {p.colour for p in train} == set(COLOURS)
    assert {p.shape for p in train} == set(SHAPES)
    assert {p.count for p in train} == set(range(1, len(COUNTS) + 1))
    assert {p.background for p in train} == set(BACKGROUNDS)
    assert prompt_set("toy-test") == test  # deterministic
    assert set(PROMPT_SETS) == {"toy-train", "toy-test", "toy-val"}


def test_unknown_set_lists_valid_names() -> None:
    with pytest.raises(ValueError) as err:
        prompt_set("toy-dev")
    msg = str(err.value)
    assert "\n" not in msg and "toy-train" in msg and "toy-test" in msg


def test_text_examples() -> None:
    assert ToyPrompt(2, "red", "circle", "blue").text == "two red circles on a blue background"
    assert ToyPrompt(1, "red", "circle", "blue").text == "one red circle on a blue background"
    assert ToyPrompt(3, "cyan", "triangle", "gray").text == "three cyan triangles on a gray background"


def test_round_trip_all() -> None:
    for p in all_prompts():
        assert parse_prompt(p.text) == p


def test_parse_forgives_case_and_spaces() -> None:
    assert parse_prompt("  Two RED circles  on a blue background ") == ToyPrompt(2, "red", "circle", "blue")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "two red circles",
        "one red circles on a blue background",  # plural disagrees
        "two red circle on a blue background",
        "four red circles on a blue background",  # count outside grammar
        "two orange circles on a blue background",
        "two red stars on a blue background",
        "two blue circles on a blue background",  # invisible objects
        "two red circles on an blue background",
        "two red circles on a blue background please",
    ],
)
def test_bad_text_raises(text: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_prompt(text)
    assert "\n" not in str(err.value)


def test_bad_prompt_fields_raise() -> None:
    for args in [
        (0, "red", "circle", "black"),
        (1, "pink", "circle", "black"),
        (1, "red", "star", "black"),
        (1, "red", "circle", "navy"),
        (1, "blue", "circle", "blue"),
    ]:
        with pytest.raises(ValueError):
            ToyPrompt(*args)
