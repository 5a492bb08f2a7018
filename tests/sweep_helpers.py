"""Tiny sweeps of the toy world for the tests of the plan's workers and `run_specs`."""

TINY_TRAINING = {"batch_size": 2, "monitor_size": 2, "lr_warmup_steps": 0, "checkpoint_every": 2}


def tiny_specs(world, methods, max_steps):
    from refbench.experiments.sweep import grid_specs

    extra = {
        "model": {"pretrained": str(world / "base")},
        "data": {"source": str(world / "pairs.parquet")},
        "training": TINY_TRAINING,
    }
    return grid_specs(methods, max_steps=max_steps, extra=extra)


def evaluation_steps(db, out):
    """What follows each run's training in its worker: toy-test samples (2 prompts, 1 seed), scored."""
    from refbench.experiments.steps import Step

    def then(spec):
        return [
            Step(
                "generate",
                spec.name,
                {
                    "prompts": "toy-test",
                    "seeds": 1,
                    "num_prompts": 2,
                    "db": str(db),
                    "out": str(out),
                    "no_progress": True,
                },
            ),
            Step("score", spec.name, {"metrics": "colour,count,shape", "db": str(db), "no_progress": True}),
        ]

    return then
