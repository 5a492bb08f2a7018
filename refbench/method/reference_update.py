"""The reference-update rule: a small deterministic state machine. Pure logic, no I/O.

Call ``should_sync(step)`` after each optimizer step. When it is true, the trainer syncs
the reference (``ref <- (1 - alpha) * ref + alpha * policy``, see ``mix_into``), measures
D(ref_new, init) and passes it to ``after_sync(step, divergence)``, which answers what to
do next:

- ``NONE``: keep the synced reference, keep syncing every ``tau`` steps;
- ``FREEZE``: D > delta; keep this reference (the first one past the delta boundary, so
  "near" it, as the paper says) and never sync again;
- ``REINIT``: D > delta; reset the reference to the initial model; syncing continues.

A fixed reference (Diffusion-DPO) never syncs. Every sync, freeze and reinit is recorded
in ``events`` with its step and divergence.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Literal

import torch

__all__ = ["Action", "RefEvent", "ReferenceUpdateRule", "ReferenceUpdater", "mix_into"]

ReferenceMode = Literal["none", "fixed", "sync"]
OnExceed = Literal["freeze", "reinit", "none"]


class Action(str, Enum):  # noqa: UP042 (a StrEnum would change what str() and f-strings of a member give)
    NONE = "none"
    SYNC = "sync"
    FREEZE = "freeze"
    REINIT = "reinit"


@dataclass(frozen=True)
class RefEvent:
    step: int
    kind: str  # "sync" | "freeze" | "reinit"
    divergence: float | None


@dataclass(frozen=True)
class ReferenceUpdateRule:
    """mode: ``none`` (no reference, e.g. SFT), ``fixed`` (ref = init) or ``sync`` (every tau steps).

    delta: threshold on D(ref, init); ``None`` means never act on it (``ref-noreg``).
    on_exceed: what happens the first time D > delta.
    mixup_alpha: 1 is the paper's hard copy; below 1 is TR-DPO's soft update.
    """

    mode: ReferenceMode = "fixed"
    tau: int = 32
    delta: float | None = None
    on_exceed: OnExceed = "freeze"
    mixup_alpha: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in ("none", "fixed", "sync"):
            raise ValueError(f"reference mode must be one of none, fixed, sync; got {self.mode!r}")
        if self.tau < 1:
            raise ValueError(f"tau must be >= 1, got {self.tau}")
        if self.delta is not None and self.delta <= 0:
            raise ValueError(f"delta must be > 0 (or None for no regularisation), got {self.delta}")
        if self.on_exceed not in ("freeze", "reinit", "none"):
            raise ValueError(f"on_exceed must be one of freeze, reinit, none; got {self.on_exceed!r}")
        if not 0.0 < self.mixup_alpha <= 1.0:
            raise ValueError(f"mixup_alpha must be in (0, 1], got {self.mixup_alpha}")

    @property
    def regularised(self) -> bool:
        return self.mode == "sync" and self.delta is not None and self.on_exceed != "none"


@dataclass
class ReferenceUpdater:
    rule: ReferenceUpdateRule
    frozen: bool = False
    events: list[RefEvent] = field(default_factory=list)

    def should_sync(self, step: int) -> bool:
        """True at steps 1.. that are multiples of tau, while syncing is on and not frozen."""
        return self.rule.mode == "sync" and not self.frozen and step >= 1 and step % self.rule.tau == 0

    def after_sync(self, step: int, divergence: float | None) -> Action:
        """Record the sync at ``step`` with D(ref_new, init) and decide freeze / reinit / nothing."""
        if not self.should_sync(step):
            raise ValueError(f"step {step} is not a sync point (tau={self.rule.tau}, frozen={self.frozen})")
        self.events.append(RefEvent(step, Action.SYNC.value, divergence))
        if not self.rule.regularised:
            return Action.NONE
        if divergence is None:
            raise ValueError("a regularised rule needs the measured divergence at every sync")
        if divergence <= self.rule.delta:  # type: ignore[operator]
            return Action.NONE
        if self.rule.on_exceed == "freeze":
            self.frozen = True
            self.events.append(RefEvent(step, Action.FREEZE.value, divergence))
            return Action.FREEZE
        self.events.append(RefEvent(step, Action.REINIT.value, divergence))
        return Action.REINIT

    def state_dict(self) -> dict:
        return {"frozen": self.frozen, "events": [asdict(e) for e in self.events]}

    def load_state_dict(self, state: dict) -> None:
        self.frozen = bool(state["frozen"])
        self.events = [RefEvent(**e) for e in state["events"]]


@torch.no_grad()
def mix_into(reference: Iterable[torch.Tensor], source: Iterable[torch.Tensor], alpha: float) -> None:
    """In place: ``reference <- (1 - alpha) * reference + alpha * source`` (alpha = 1 copies exactly).
    The source may sit on another device (a reference offloaded to CPU memory)."""
    for ref_tensor, src_tensor in zip(reference, source, strict=True):
        if alpha == 1.0:
            ref_tensor.copy_(src_tensor)
        else:
            ref_tensor.lerp_(src_tensor.to(ref_tensor.device, ref_tensor.dtype), alpha)
