"""The divergence monitor reuses the frozen models' errors on its fixed inputs; the values must
be exactly (bit for bit) those of measuring everything afresh, as the trainer did before."""

import pytest
import torch

from refbench.config import load_config
from refbench.method.divergence import divergence
from refbench.training.modelset import POLICY, REFERENCE


def trainer_for(toy_world, tmp_path, lora_rank):
    from refbench.training.data import load_preference_pairs
    from refbench.training.trainer import Trainer

    config = load_config(
        method="refdpo",
        overrides={
            "model": {"pretrained": str(toy_world / "base"), "lora_rank": lora_rank},
            "data": {"source": str(toy_world / "pairs.parquet")},
            "method": {"tau": 2, "delta": 1.0},
            "training": {
                "max_steps": 3,
                "batch_size": 2,
                "learning_rate": 1e-3,
                "lr_warmup_steps": 0,
                "monitor_size": 4,
                "monitor_every": 1,
                "checkpoint_every": 100,
            },
        },
    )
    trainer = Trainer(config, load_preference_pairs(config), tmp_path / "run", None, progress=False)
    trainer.save = lambda: None
    return trainer


def fresh_errors(trainer, name, *, eval_mode):
    """Errors on the monitor set computed from scratch, the way the trainer always measured."""
    backend = trainer.backend
    x0, cond, timesteps, noise = trainer.monitor.inputs()
    x_t, target = backend.add_noise(x0, noise, timesteps), backend.target(x0, noise, timesteps)
    with torch.no_grad(), trainer.models.use(name) as module:
        was_training = module.training
        if eval_mode:
            module.eval()
        errors = backend.errors(module, x_t, timesteps, cond, target)
        module.train(was_training)
    return errors


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_cached_errors_are_the_fresh_ones(toy_world, tmp_path, lora_rank):
    trainer = trainer_for(toy_world, tmp_path, lora_rank)
    trainer.train()  # 3 steps: syncs at 2, monitor at 1 and 3
    assert trainer.models.reference_version == 1
    assert torch.equal(trainer.monitor.errors("initial"), fresh_errors(trainer, "initial", eval_mode=False))
    assert torch.equal(trainer.monitor.errors(REFERENCE), fresh_errors(trainer, REFERENCE, eval_mode=True))
    assert torch.equal(trainer.monitor.errors(POLICY), fresh_errors(trainer, POLICY, eval_mode=True))
    # D as the trainer used to compute it: everything afresh
    init = fresh_errors(trainer, "initial", eval_mode=False)
    expected = [float(divergence(fresh_errors(trainer, n, eval_mode=True), init).float()) for n in (POLICY, REFERENCE)]
    assert list(trainer.monitor.divergences((POLICY, REFERENCE)).values()) == expected


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_a_hard_sync_gives_the_policy_the_reference_errors(toy_world, tmp_path, lora_rank):
    """After alpha = 1 the reference holds the policy's weights: the same errors, bit for bit, which is
    why a sync measures one of the two. The reference's cached errors expire with the sync."""
    trainer = trainer_for(toy_world, tmp_path, lora_rank)
    trainer.train()
    before = trainer.monitor.errors(REFERENCE).clone()
    with torch.no_grad():  # move the policy, then sync it into the reference
        for p in trainer.models.trainable_parameters():
            p.add_(1e-2 * torch.randn_like(p))
    trainer.models.sync_reference(1.0)
    after = trainer.monitor.errors(REFERENCE)
    assert not torch.equal(after, before)  # recomputed, not the stale cache
    assert torch.equal(after, fresh_errors(trainer, POLICY, eval_mode=True))
    trainer.models.reset_reference()
    assert torch.equal(trainer.monitor.errors(REFERENCE), fresh_errors(trainer, REFERENCE, eval_mode=True))
