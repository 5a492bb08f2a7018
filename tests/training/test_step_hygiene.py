"""What an optimizer step leaves behind and what it reads from the device (issue 24): foreach
AdamW, gradients set to None, metrics kept as tensors and read only for the store or the bar."""

import torch
from toy_helpers import config_for

from refbench.config import load_config


def test_adamw_is_foreach_and_not_fused():
    """foreach gives the for-loop's numbers, one kernel per group; fused (faster still) changes
    the weights in the last bit (measured on the tiny SD1.5 UNet), so the committed runs would no
    longer reproduce."""
    from refbench.training.optimizers import make_optimizer

    parameters = [torch.nn.Parameter(torch.zeros(3))]
    adamw = make_optimizer(load_config(preset="sd15").training, parameters, 1e-5)
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.defaults["foreach"] is True and not adamw.defaults["fused"]


def _trainer(toy_world, tmp_path, **training):
    from refbench.training.data import load_preference_pairs
    from refbench.training.trainer import Trainer

    config = config_for(toy_world, method="diff-dpo", **training)
    trainer = Trainer(config, load_preference_pairs(config), tmp_path / "run", None, progress=False)
    trainer.save = lambda: None
    return trainer


def test_a_step_sets_gradients_to_none_and_keeps_its_metrics_as_tensors(toy_world, tmp_path):
    trainer = _trainer(toy_world, tmp_path)
    before = [p.detach().clone() for p in trainer.models.trainable_parameters()]
    totals = trainer._optimizer_step(1)
    parameters = list(trainer.models.trainable_parameters())
    assert all(p.grad is None for p in parameters)
    assert any(not torch.equal(a, p.detach()) for a, p in zip(before, parameters))  # the step was applied
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in totals.values())
    assert 0.0 <= float(totals["accuracy"]) <= 1.0


def test_metrics_are_reduced_only_on_logged_steps_without_a_bar(toy_world, tmp_path):
    """log_every 2, no progress bar, no monitor in the run: of 4 steps only 2 and 4 read their
    metrics (the reduce and the copy to the host); with the bar on, every step does."""
    for progress, expected in ((False, 2), (True, 4)):
        trainer = _trainer(
            toy_world, tmp_path / str(progress), max_steps=4, log_every=2, monitor_every=100, checkpoint_every=100
        )
        trainer.progress = progress
        calls = []
        reduce = trainer.accelerator.reduce
        trainer.accelerator.reduce = lambda tensor, calls=calls, reduce=reduce, **kwargs: (
            calls.append(tensor.shape) or reduce(tensor, **kwargs)
        )
        try:
            trainer.train()
        finally:
            del trainer.accelerator.reduce
        assert len(calls) == expected
        assert trainer.step == 4
