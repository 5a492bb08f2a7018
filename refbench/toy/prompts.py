"""Compositional prompt grammar of the toy text-to-image world.

A prompt is ``<count> <colour> <shape>[s] on a <background> background``, e.g.
"two red circles on a blue background". The grammar is the product
COUNTS x COLOURS x SHAPES x BACKGROUNDS, minus the combinations where the object
colour equals the background colour (the objects would be invisible).

Splits: "toy-test" holds every prompt whose (colour, shape) pair is in
``HELD_OUT_PAIRS``; "toy-train" holds the rest. Each held-out colour and each
held-out shape still occurs in training with other partners, so the test split
measures compositional generalisation (unseen combinations of seen attributes).
"toy-val" is a simple random sample of 42 toy-train prompts (numpy seed 2025): the
validation prompts that tuning uses, whose pairs the paper-regime runs leave out of
training (``data.exclude_prompts``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

# Object colours. RGB values live in ``PALETTE`` (0-255); they are far apart in
# RGB so that a pixel oracle can tell them apart after blur and noise.
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "cyan")
# Shapes the renderer draws and the oracle separates at 16 px (fill patterns differ).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Counts as words; COUNTS[i] is the word for the integer i + 1.
COUNTS: tuple[str, ...] = ("one", "two", "three")
# Backgrounds: three neutrals plus two object colours (so some combinations skip).
BACKGROUNDS: tuple[str, ...] = ("black", "white", "gray", "blue", "green")

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 190),
    "cyan": (40, 200, 210),
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
}

# (colour, shape) pairs seen only at test time: one per shape and a different
# colour each, so every colour and every shape still appears in training.
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset({("red", "triangle"), ("blue", "square"), ("yellow", "circle")})

PROMPT_SETS: tuple[str, ...] = ("toy-train", "toy-test", "toy-val")
VALIDATION_SIZE, VALIDATION_SEED = 42, 2025  # as many prompts as toy-test


@dataclass(frozen=True)
class ToyPrompt:
    """One point of the grammar; ``count`` is an int in 1..len(COUNTS)."""

    count: int
    colour: str
    shape: str
    background: str

    def __post_init__(self) -> None:
        # Validate eagerly: a bad prompt must fail where it is built, not in the renderer.
        if not (1 <= self.count <= len(COUNTS)):
            raise ValueError(f"count must be in 1..{len(COUNTS)}, got {self.count}")
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; valid: {', '.join(COLOURS)}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; valid: {', '.join(SHAPES)}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}; valid: {', '.join(BACKGROUNDS)}")
        if self.colour == self.background:
            raise ValueError(f"object colour and background are both {self.colour!r}")

    @property
    def text(self) -> str:
        noun = self.shape if self.count == 1 else self.shape + "s"
        article = "an" if self.background[0] in "aeiou" else "a"
        return f"{COUNTS[self.count - 1]} {self.colour} {noun} on {article} {self.background} background"


_PATTERN = re.compile(
    r"^(?P<count>{c}) (?P<colour>{col}) (?P<shape>{sh})(?P<plural>s?) on an? (?P<bg>{bg}) background$".format(
        c="|".join(COUNTS), col="|".join(COLOURS), sh="|".join(SHAPES), bg="|".join(BACKGROUNDS)
    )
)


@lru_cache(maxsize=4096)
def parse_prompt(text: str) -> ToyPrompt:
    """Inverse of ``ToyPrompt.text`` (case and repeated spaces are forgiven)."""
    if not isinstance(text, str):
        raise ValueError(f"prompt must be a string, got {type(text).__name__}")
    norm = " ".join(text.strip().lower().split())
    m = _PATTERN.match(norm)
    if m is None:
        raise ValueError(f"not a toy prompt: {text!r} (expected e.g. 'two red circles on a blue background')")
    count = COUNTS.index(m["count"]) + 1
    if (count == 1) == bool(m["plural"]):
        raise ValueError(f"not a toy prompt: {text!r} (count and plural disagree)")
    try:
        prompt = ToyPrompt(count, m["colour"], m["shape"], m["bg"])
    except ValueError as exc:  # e.g. red on red: grammatical words, impossible image
        raise ValueError(f"not a toy prompt: {text!r} ({exc})") from None
    if prompt.text != norm:  # wrong article ("an blue") and similar
        raise ValueError(f"not a toy prompt: {text!r} (expected {prompt.text!r})")
    return prompt


@lru_cache(maxsize=1)
def _all_prompts() -> tuple[ToyPrompt, ...]:
    return tuple(
        ToyPrompt(count, colour, shape, bg)
        for count in range(1, len(COUNTS) + 1)
        for colour in COLOURS
        for shape in SHAPES
        for bg in BACKGROUNDS
        if colour != bg
    )


def all_prompts() -> list[ToyPrompt]:
    """Every valid prompt, in a fixed order (count, colour, shape, background)."""
    return list(_all_prompts())


def is_held_out(prompt: ToyPrompt) -> bool:
    return (prompt.colour, prompt.shape) in HELD_OUT_PAIRS


def prompt_set(name: str) -> list[ToyPrompt]:
    """Prompts of a named split, in ``all_prompts`` order."""
    if name == "toy-train":
        return [p for p in _all_prompts() if not is_held_out(p)]
    if name == "toy-test":
        return [p for p in _all_prompts() if is_held_out(p)]
    if name == "toy-val":
        import numpy as np

        train = prompt_set("toy-train")
        chosen = np.random.default_rng(VALIDATION_SEED).choice(len(train), VALIDATION_SIZE, replace=False)
        return [train[i] for i in sorted(chosen)]
    raise ValueError(f"unknown prompt set {name!r}; valid: {', '.join(PROMPT_SETS)}")
