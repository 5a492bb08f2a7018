"""Rules between the layers of a config (model preset < method preset < file < flags) that a
single field's validation cannot see: what was asked for above the model preset."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, get_args, get_origin

from .errors import ConfigError

__all__ = [
    "accumulation_or_effective_batch",
    "vae_goes_with_its_model",
    "refuse_reference_updates",
    "coerce",
    "assignments",
    "check_data_columns",
    "DATA_COLUMN_KEYS",
]

DATA_COLUMN_KEYS = ("caption", "image_0", "image_1", "label_0", "preferred")

_REFERENCE_UPDATE_FIELDS = ("tau", "delta", "on_exceed", "mixup_alpha")


def accumulation_or_effective_batch(raw: dict, *layers: dict) -> None:
    """An accumulation asked for above the model preset wins over the preset's effective batch
    (the presets state the effective batch); asking for both in one place is refused."""
    for layer in layers:
        training = {k: v for k, v in layer.get("training", {}).items() if v is not None}
        if "gradient_accumulation_steps" in training and training.get("effective_batch"):
            raise ConfigError("training.effective_batch: give it or training.gradient_accumulation_steps, not both")
        if "gradient_accumulation_steps" in training:
            raw.setdefault("training", {})["effective_batch"] = 0
        elif training.get("effective_batch"):
            raw.setdefault("training", {}).pop("gradient_accumulation_steps", None)


def vae_goes_with_its_model(raw: dict, *layers: dict) -> None:
    """The preset's ``model.vae`` belongs to the preset's model: another ``model.pretrained``
    asked for above the preset drops it, unless a ``model.vae`` is asked for too."""
    asked = [{k: v for k, v in layer.get("model", {}).items() if v is not None} for layer in layers]
    if any("pretrained" in a for a in asked) and not any("vae" in a for a in asked):
        raw.setdefault("model", {})["vae"] = None


def refuse_reference_updates(objective: str, needs_reference: bool, *layers: dict) -> None:
    """tau, delta, on_exceed or mixup_alpha given for a reference-free method (above the model
    preset, whose numbers serve every method) would do nothing: refuse them, naming the field."""
    if needs_reference:
        return
    for layer in layers:
        section = layer.get("method")
        for key in _REFERENCE_UPDATE_FIELDS:
            if isinstance(section, dict) and section.get(key) is not None:
                raise ConfigError(
                    f"method.{key}: the {objective} objective has no reference model to update; remove {key}"
                )


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Accept what TOML/JSON/CLI give (ints for floats, etc.); refuse the wrong kind with one line."""
    if get_origin(hint) in (typing.Union, types.UnionType):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        allowed = [a for a in args if a is not type(None)]
    else:
        allowed = [hint]
    target = allowed[0]
    if get_origin(target) is Literal:
        return value  # checked by the dataclass
    if target is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: must be true or false; got {value!r}")
    if target is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if target is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if target is str and isinstance(value, str):
        return value
    if (target is dict or get_origin(target) is dict) and isinstance(value, dict):  # method.params
        if all(isinstance(k, str) for k in value):
            return dict(value)
        raise ConfigError(f"{where}: must be a table with text keys; got {value!r}")
    if get_origin(target) is tuple and isinstance(value, (list, tuple)):  # tuple[int, ...]: a list of ints
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return tuple(value)
        raise ConfigError(f"{where}: must be a list of integers; got {value!r}")
    raise ConfigError(f"{where}: must be {getattr(target, '__name__', target)}; got {value!r}")


SECTIONS = ("method", "model", "data", "training")


def assignments(items: list[str] | None) -> dict:
    """``--set section.field=value`` items as nested overrides. The value is read as a TOML value
    (``4``, ``1e-5``, ``true``, ``"text"``, ``[64, 128]``), else taken as a string (``dpo``,
    ``toy-val``); the field's type is then checked like a config file's, in one line.
    ``method.params.KEY=VALUE`` sets one keyword argument of an external objective."""
    import tomllib

    overrides: dict = {}
    for item in items or []:
        key, equals, text = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not equals or not dot or not name.strip() or section not in SECTIONS:
            raise ConfigError(
                f"--set {item!r}: expected SECTION.FIELD=VALUE with SECTION one of "
                f"{', '.join(SECTIONS)} (e.g. --set method.tau=4)"
            )
        try:
            value = tomllib.loads(f"value = {text.strip()}")["value"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        *table, name = name.strip().split(".")  # method.params.KEY: a key of the params table
        target = overrides.setdefault(section, {})
        for part in table:
            target = target.setdefault(part, {})
        target[name] = value
    return overrides


def check_data_columns(columns: dict) -> None:
    """``data.columns``: known keys, text values (whether the mapping is complete is checked when
    the data is opened, by the parquet source)."""
    unknown = [k for k in columns if k not in DATA_COLUMN_KEYS]
    if unknown:
        raise ConfigError(
            f"data.columns: must have keys among {', '.join(DATA_COLUMN_KEYS)}; got {', '.join(map(str, unknown))}"
        )
    for key, value in columns.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(f"data.columns: must name a column for {key}; got {value!r}")
