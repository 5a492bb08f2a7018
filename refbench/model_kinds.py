"""The model kinds ``model.kind`` may name, each with the one backend class that owns it.

This is the light half of the backend registry: ``config`` validates ``model.kind`` here, and
``config`` sits below ``training``, so a kind's backend is named as a "module:Class" string
and only ``training.backends.backend_class`` imports it. Everything else that depends on the
kind (its source, noising, saving, sampling, cache layout, default guidance, tiny and
full-size builds) is declared on that class; what ``config`` must check before any model code
is imported is the only other thing kept here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModelKind", "MODEL_KINDS", "kind_names"]


@dataclass(frozen=True)
class ModelKind:
    backend: str  # "module:Class" of its Backend subclass
    t5: bool = False  # it has an optional T5 text encoder (model.t5 may be false)


MODEL_KINDS: dict[str, ModelKind] = {
    "toy": ModelKind("refbench.training.backends.toy:ToyBackend"),
    "toy-flow": ModelKind("refbench.training.backends.toy_flow:ToyFlowBackend"),
    "sd15": ModelKind("refbench.training.backends.sd:StableDiffusionBackend"),
    "sdxl": ModelKind("refbench.training.backends.sd:StableDiffusionXLBackend"),
    "sd3": ModelKind("refbench.training.backends.flow:SD3Backend", t5=True),  # SD3 and SD3.5
}


def kind_names() -> tuple[str, ...]:
    return tuple(MODEL_KINDS)
