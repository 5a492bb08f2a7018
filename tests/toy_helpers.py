"""Configs for the small random-weight toy world of the ``toy_world`` fixture (conftest.py)."""

from refbench.config import load_config


def config_for(toy_world, method="refdpo", name=None, **training):
    # Reference-free methods (sft) refuse tau and delta.
    reference = {} if method == "sft" else {"tau": 2, "delta": 1.0}
    return load_config(
        method=method,
        name=name,
        overrides={
            "model": {"pretrained": str(toy_world / "base")},
            "data": {"source": str(toy_world / "pairs.parquet")},
            "method": {**reference, "beta": 5000.0},
            "training": {
                "max_steps": 6,
                "batch_size": 4,
                "checkpoint_every": 3,
                "learning_rate": 1e-4,
                "lr_warmup_steps": 0,
                "monitor_size": 2,
                "monitor_every": 1,
                **training,
            },
        },
    )
