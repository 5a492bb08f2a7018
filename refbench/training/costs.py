"""What a run's training costs: image-passes through each model, by kind, and wall seconds.

One image-pass is one image (a winner or a loser) through one model, forward or backward, so
the counts compare methods whatever their batch size: Diffusion-DPO's policy runs forward and
backward on 2B images per micro-batch and its reference forward on the same 2B; SFT runs the
policy on B winners only; MaPO has no reference pass. The monitor's passes (D(policy, init) and
D(ref, init) on the monitor set) are counted apart from training, under ``monitor``, and the
initial model's under ``initial`` (it runs once per run: its errors are cached). Counts are per
process times the number of processes, since every process does the same work on its shard.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PassCounts", "COST_KINDS"]

COST_KINDS = ("policy", "reference", "initial", "monitor")


@dataclass
class PassCounts:
    forward: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COST_KINDS, 0))
    backward: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COST_KINDS, 0))

    def add(self, kind: str, images: int, *, backward: bool = False) -> None:
        if kind not in self.forward:
            raise KeyError(f"unknown cost kind {kind!r}; valid: {', '.join(COST_KINDS)}")
        self.forward[kind] += int(images)
        if backward:
            self.backward[kind] += int(images)

    def state_dict(self) -> dict:
        return {"forward": dict(self.forward), "backward": dict(self.backward)}

    def load_state_dict(self, state: dict | None) -> None:
        if state:  # checkpoints from before costs were counted have none: counting starts at 0
            self.forward.update(state["forward"])
            self.backward.update(state["backward"])

    def rows(self, run: str, *, processes: int, seconds: float) -> list[dict]:
        """``run_costs`` rows: one per kind, and 'total' with the wall seconds of training."""
        rows = [
            {
                "run": run,
                "kind": kind,
                "forward_images": self.forward[kind] * processes,
                "backward_images": self.backward[kind] * processes,
                "seconds": None,
            }
            for kind in COST_KINDS
        ]
        rows.append(
            {
                "run": run,
                "kind": "total",
                "forward_images": sum(r["forward_images"] for r in rows),
                "backward_images": sum(r["backward_images"] for r in rows),
                "seconds": seconds,
            }
        )
        return rows
