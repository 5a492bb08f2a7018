"""What each method costs, from ``run_costs``: image-passes per optimizer step and training seconds.

An image-pass is one image through one model (``refbench/training/costs.py``); per step, a
Diffusion-DPO run with batch B makes 2B policy forwards, 2B policy backwards and 2B reference
forwards, plus the monitor's passes every ``monitor_every`` steps. Values are means over a
family's training seeds. Wall seconds depend on the machine and on what else ran beside the run
(the reproduction trains two runs at once), so the passes are the figure to compare methods by.
"""

from __future__ import annotations

import pandas as pd

from . import reads, seeds

__all__ = ["family_costs", "cost_text", "COST_COLUMNS"]

COST_COLUMNS = ["family", "forward_per_step", "backward_per_step", "monitor_per_step", "train_seconds", "seeds"]


def family_costs(db, families: list[str]) -> pd.DataFrame:
    """One row per family with costs: forward / backward image-passes per step (training, monitor
    apart) and training wall seconds, means over seeds."""
    rows = []
    for family, runs in seeds.families(db, families).items():
        costs = reads.run_costs(db, runs)
        if costs.empty:
            continue
        settings = reads.run_settings(db, runs).set_index("run")["max_steps"]
        per_run = []
        for run, group in costs.groupby("run"):
            kinds = group.set_index("kind")
            steps = float(settings.get(run, float("nan")))
            training = kinds.loc[[k for k in ("policy", "reference") if k in kinds.index]]
            monitor = kinds.loc[[k for k in ("monitor", "initial") if k in kinds.index]]
            per_run.append(
                {
                    "forward_per_step": training["forward_images"].sum() / steps,
                    "backward_per_step": training["backward_images"].sum() / steps,
                    "monitor_per_step": monitor["forward_images"].sum() / steps,
                    "train_seconds": float(kinds.loc["total", "seconds"]) if "total" in kinds.index else float("nan"),
                }
            )
        frame = pd.DataFrame(per_run)
        rows.append({"family": family, **frame.mean().to_dict(), "seeds": len(per_run)})
    return pd.DataFrame(rows, columns=COST_COLUMNS)


def cost_text(db, families: list[str]) -> str:
    """'refdpo 32+16 passes/step, 89 s; diff-dpo ...' (forward + backward per step, training seconds)."""
    table = family_costs(db, families)
    return "; ".join(
        f"{row.family} {row.forward_per_step:.0f}+{row.backward_per_step:.0f} passes/step, {row.train_seconds:.0f} s"
        for row in table.itertuples(index=False)
    )
