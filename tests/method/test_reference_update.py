"""The reference-update state machine: when it syncs, freezes and re-initialises."""

import pytest
import torch

from refbench.method.reference_update import Action, ReferenceUpdater, ReferenceUpdateRule, RefEvent, mix_into


def test_fixed_reference_never_syncs():
    updater = ReferenceUpdater(ReferenceUpdateRule(mode="fixed", tau=4))
    assert not any(updater.should_sync(step) for step in range(0, 200))


def test_syncs_happen_only_at_multiples_of_tau():
    """tau = 4, unregularised: syncs at 4, 8, 12, ... and never at step 0."""
    updater = ReferenceUpdater(ReferenceUpdateRule(mode="sync", tau=4, delta=0.01, on_exceed="none"))
    synced = []
    for step in range(0, 41):
        if updater.should_sync(step):
            synced.append(step)
            assert updater.after_sync(step, divergence=10.0) is Action.NONE  # no regularisation: huge D is fine
    assert synced == [4, 8, 12, 16, 20, 24, 28, 32, 36, 40]
    assert [e.kind for e in updater.events] == ["sync"] * 10


def test_first_sync_past_delta_freezes_and_no_sync_follows():
    """tau 4, delta 0.01; divergences 0.004 at step 4, 0.009 at 8 (both <= delta), 0.012 at 12
    (> delta): freeze at 12; no further sync up to step 100."""
    updater = ReferenceUpdater(ReferenceUpdateRule(mode="sync", tau=4, delta=0.01, on_exceed="freeze"))
    divergences = {4: 0.004, 8: 0.009, 12: 0.012, 16: 0.0}
    actions = {}
    for step in range(1, 101):
        if updater.should_sync(step):
            actions[step] = updater.after_sync(step, divergences[step])
    assert actions == {4: Action.NONE, 8: Action.NONE, 12: Action.FREEZE}
    assert updater.frozen
    assert updater.events == [
        RefEvent(4, "sync", 0.004),
        RefEvent(8, "sync", 0.009),
        RefEvent(12, "sync", 0.012),
        RefEvent(12, "freeze", 0.012),
    ]


def test_divergence_equal_to_delta_does_not_trigger():
    """The rule acts when D *exceeds* delta."""
    updater = ReferenceUpdater(ReferenceUpdateRule(mode="sync", tau=2, delta=0.01, on_exceed="freeze"))
    assert updater.after_sync(2, 0.01) is Action.NONE


def test_reinit_restores_init_and_syncing_continues():
    """A trainer in miniature: policy moves by +1 each step, syncs every 2 steps (hard copy),
    D = ref - init (one weight), delta 2.5. At step 2 ref = 2 (D 2 <= 2.5), at step 4 ref = 4
    (D 4 > 2.5): reinit, ref back to init = 0 exactly; step 6 syncs again (ref = 6, reinit again)."""
    updater = ReferenceUpdater(ReferenceUpdateRule(mode="sync", tau=2, delta=2.5, on_exceed="reinit"))
    init, policy, ref = torch.zeros(1), torch.zeros(1), torch.zeros(1)
    log = []
    for step in range(1, 7):
        policy += 1.0
        if updater.should_sync(step):
            mix_into([ref], [policy], 1.0)
            action = updater.after_sync(step, float(ref - init))
            if action is Action.REINIT:
                mix_into([ref], [init], 1.0)
            log.append((step, action, ref.item()))
    assert log == [(2, Action.NONE, 2.0), (4, Action.REINIT, 0.0), (6, Action.REINIT, 0.0)]
    assert not updater.frozen
    assert [e.kind for e in updater.events] == ["sync", "sync", "reinit", "sync", "reinit"]


def test_mixup_alpha():
    """ref (0, 0), policy (1, 2), alpha 0.25: ref <- 0.75 * ref + 0.25 * policy = (0.25, 0.5)."""
    ref = torch.zeros(2)
    mix_into([ref], [torch.tensor([1.0, 2.0])], 0.25)
    assert ref.tolist() == [0.25, 0.5]
    mix_into([ref], [torch.tensor([3.0, 4.0])], 1.0)
    assert ref.tolist() == [3.0, 4.0]


def test_after_sync_outside_a_sync_point_is_an_error():
    updater = ReferenceUpdater(ReferenceUpdateRule(mode="sync", tau=4, delta=0.01))
    with pytest.raises(ValueError, match="not a sync point"):
        updater.after_sync(3, 0.0)
    with pytest.raises(ValueError, match="divergence"):
        updater.after_sync(4, None)


def test_state_round_trip():
    updater = ReferenceUpdater(ReferenceUpdateRule(mode="sync", tau=1, delta=0.01))
    updater.after_sync(1, 0.005)
    updater.after_sync(2, 0.02)
    restored = ReferenceUpdater(updater.rule)
    restored.load_state_dict(updater.state_dict())
    assert restored.frozen and restored.events == updater.events


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(tau=0), "tau"),
        (dict(delta=0.0), "delta"),
        (dict(mixup_alpha=0.0), "mixup_alpha"),
        (dict(mode="sometimes"), "mode"),
        (dict(on_exceed="panic"), "on_exceed"),
    ],
)
def test_rule_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ReferenceUpdateRule(**kwargs)
