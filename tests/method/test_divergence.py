"""The divergence estimate D(model, init) from per-sample errors, by hand."""

import math

import pytest
import torch

from refbench.method.divergence import divergence, divergence_by_bin


def test_divergence_is_the_mean_error_gap():
    """ref errors (0.3, 0.5), init errors (0.2, 0.2): gaps (0.1, 0.3), D = 0.2.
    A model equal to init has D = 0; a model with smaller errors has negative D."""
    assert divergence(torch.tensor([0.3, 0.5]), torch.tensor([0.2, 0.2])).item() == pytest.approx(0.2)
    same = torch.tensor([0.4, 0.1, 0.7])
    assert divergence(same, same.clone()).item() == 0.0
    assert divergence(torch.tensor([0.1]), torch.tensor([0.3])).item() == pytest.approx(-0.2)


def test_divergence_by_bin():
    """t (0, 1, 5) with edges (0, 3, 6, 9): gaps (0.1, 0.3, -0.2) ->
    bin [0,3): mean 0.2 of 2; bin [3,6): -0.2 of 1; bin [6,9): empty -> NaN, 0."""
    means, counts = divergence_by_bin(
        torch.tensor([0.3, 0.5, 0.1]),
        torch.tensor([0.2, 0.2, 0.3]),
        torch.tensor([0, 1, 5]),
        torch.tensor([0, 3, 6, 9]),
    )
    assert counts.tolist() == [2, 1, 0]
    assert means[0].item() == pytest.approx(0.2)
    assert means[1].item() == pytest.approx(-0.2)
    assert math.isnan(means[2].item())


def test_divergence_rejects_bad_shapes():
    with pytest.raises(ValueError):
        divergence(torch.tensor([0.1, 0.2]), torch.tensor([0.1]))
    with pytest.raises(ValueError):
        divergence(torch.tensor([]), torch.tensor([]))
