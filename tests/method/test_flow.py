"""Rectified flow in the trainer's convention (method/flow.py), with hand-computed numbers."""

import pytest
import torch

from refbench.method.flow import equivalent_alphas_cumprod, flow_noisy, flow_velocity, model_timesteps, shifted_sigmas
from refbench.method.timesteps import GammaBinnedSampler, reward_scale


def test_the_grid_is_uniform_then_shifted():
    """T = 4: u = (t + 1) / 4 = 0.25, 0.5, 0.75, 1. Shift 1 leaves them; shift 3 maps
    u -> 3u / (1 + 2u): 0.75 / 1.5 = 0.5, 1.5 / 2 = 0.75, 2.25 / 2.5 = 0.9, 3 / 3 = 1."""
    assert shifted_sigmas(4, 1.0).tolist() == [0.25, 0.5, 0.75, 1.0]
    assert torch.allclose(shifted_sigmas(4, 3.0), torch.tensor([0.5, 0.75, 0.9, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError):
        shifted_sigmas(4, 0.0)


def test_the_grid_is_the_schedulers_training_grid_read_backwards():
    """diffusers' FlowMatchEulerDiscreteScheduler builds sigmas from t = T..1 (noisiest first): the
    trainer's t = 0 is its last entry."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    for shift in (1.0, 3.0):
        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
        assert torch.allclose(scheduler.sigmas.double().flip(0)[:1000], shifted_sigmas(1000, shift), atol=1e-6)


def test_noising_and_target():
    """x0 = 2, eps = -1 at s = 0.25: x_s = 0.75 * 2 + 0.25 * (-1) = 1.25; v = eps - x0 = -3.
    At s = 1 the input is the noise itself. The model's timestep is s * T: 0.25 * 1000 = 250."""
    x0, noise = torch.full((2, 1, 2, 2), 2.0), torch.full((2, 1, 2, 2), -1.0)
    noisy = flow_noisy(x0, noise, torch.tensor([0.25, 1.0]))
    assert noisy[0].unique().tolist() == [1.25] and noisy[1].unique().tolist() == [-1.0]
    assert flow_velocity(x0, noise).unique().tolist() == [-3.0]
    assert model_timesteps(torch.tensor([0.25]), 1000).tolist() == [250.0]


def test_the_equivalent_abar_has_the_flows_snr():
    """abar = (1-s)^2 / ((1-s)^2 + s^2): s = 0.5 -> 0.25 / 0.5 = 0.5; s = 0.25 -> 0.5625 / 0.625 = 0.9;
    s = 1 -> 0. SNR = abar / (1 - abar) = 9 at s = 0.25, which is ((1 - 0.25) / 0.25)^2 = 9."""
    abar = equivalent_alphas_cumprod(torch.tensor([0.5, 0.25, 1.0]))
    assert torch.allclose(abar, torch.tensor([0.5, 0.9, 0.0], dtype=torch.float64))
    assert abar[1] / (1 - abar[1]) == pytest.approx(9.0)
    with pytest.raises(ValueError):
        equivalent_alphas_cumprod(torch.tensor([0.0]))


def test_lambda_on_the_flow_grid_gives_the_pure_noise_end_two():
    """Grid s = 0.25, 0.5, 0.75, 1: 1/sqrt(SNR) = s / (1 - s) = 1/3, 1, 3, inf. The rule: min-max over
    the finite values, (1/3, 1, 3) -> (0, (1 - 1/3) / (3 - 1/3) = 0.25, 1), and s = 1 gets 2.
    lambda = 1 + that = 1, 1.25, 2, 2."""
    scale = reward_scale("inv-sqrt-snr", equivalent_alphas_cumprod(shifted_sigmas(4, 1.0)))
    assert torch.allclose(scale, torch.tensor([1.0, 1.25, 2.0, 2.0]))


def test_gamma_bin_zero_is_the_noisiest_sigmas():
    """T = 4, 2 bins, gamma 0.5: bin k = 0 is t in {2, 3} (s = 0.75, 1), probability 1 / 1.5 = 2/3,
    so 1/3 per t; bin 1 (s = 0.25, 0.5) 1/6 per t."""
    probabilities = GammaBinnedSampler(4, 0.5, 2).probabilities()
    assert torch.allclose(probabilities, torch.tensor([1 / 6, 1 / 6, 1 / 3, 1 / 3], dtype=torch.float64))
    assert shifted_sigmas(4)[probabilities.argmax()] >= 0.75


def test_lambda_does_not_depend_on_the_shift():
    """With shift k, s / (1 - s) = k u / (1 + (k - 1) u - k u) = k u / (1 - u): the shift multiplies
    1/sqrt(SNR) by k at every t, which the min-max removes. And it is nearly constant on the flow
    grid: 1/sqrt(SNR) = u / (1 - u) is 999 at the last finite point, so t = 989 (u = 0.99, 99)
    gets 1 + (99 - 0.001) / (999 - 0.001) = 1.0991."""
    grid_1 = reward_scale("inv-sqrt-snr", equivalent_alphas_cumprod(shifted_sigmas(1000, 1.0)))
    grid_3 = reward_scale("inv-sqrt-snr", equivalent_alphas_cumprod(shifted_sigmas(1000, 3.0)))
    assert torch.allclose(grid_1, grid_3, atol=1e-5)
    assert grid_1[989].item() == pytest.approx(1 + (99 - 1 / 999) / (999 - 1 / 999), abs=1e-5)
