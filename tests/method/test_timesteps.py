"""Timestep samplers and reward-scale schedules, against numbers worked out by hand."""

import pytest
import torch

from refbench.method.timesteps import (
    GammaBinnedSampler,
    UniformSampler,
    bin_edges,
    make_timestep_sampler,
    reward_scale,
)


def sd_alphas_cumprod(num_train_timesteps: int = 1000) -> torch.Tensor:
    """Stable Diffusion's scaled_linear schedule written out: betas = linspace(sqrt(0.00085),
    sqrt(0.012), T)^2, alphas_cumprod = cumprod(1 - betas)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def test_gamma_probabilities_small_case_by_hand():
    """T = 6, K = 3, gamma = 0.5. Ascending bins [0,2) [2,4) [4,6); in denoising order the
    noisiest [4,6) is k = 0. p_k = 0.5^k / 1.75 = (0.571429, 0.285714, 0.142857); spread over
    2 timesteps each: t 0-1 -> 0.071429, t 2-3 -> 0.142857, t 4-5 -> 0.285714."""
    sampler = GammaBinnedSampler(6, gamma=0.5, bins=3)
    expected = [0.071429, 0.071429, 0.142857, 0.142857, 0.285714, 0.285714]
    assert sampler.probabilities().tolist() == pytest.approx(expected, abs=1e-6)
    assert sampler.bin_probabilities.tolist() == pytest.approx([0.571429, 0.285714, 0.142857], abs=1e-6)


def test_unequal_bins():
    """T = 5, K = 2: edges floor(5 * [0, 1, 2] / 2) = (0, 2, 5), widths 2 and 3.
    gamma = 1: each bin 1/2, so t 0-1 -> 1/4 each, t 2-4 -> 1/6 each."""
    assert bin_edges(5, 2).tolist() == [0, 2, 5]
    probabilities = GammaBinnedSampler(5, gamma=1.0, bins=2).probabilities()
    assert probabilities.tolist() == pytest.approx([0.25, 0.25, 1 / 6, 1 / 6, 1 / 6])


def test_200k_gamma_draws_match_gamma_k_over_sum():
    """T = 1000, K = 50, gamma = 0.9: bin k (k = 0 holds t in [980, 1000)) has probability
    0.9^k / sum_j 0.9^j, sum = (1 - 0.9^50) / 0.1 = 9.948462, so p_0 = 0.100518.
    Each bin's share of 200,000 draws is within 1 percentage point of p_k and within 5
    standard errors sqrt(p_k (1 - p_k) / 200000)."""
    draws = 200_000
    sampler = GammaBinnedSampler(1000, gamma=0.9, bins=50)
    timesteps = sampler.sample(draws, generator=torch.Generator().manual_seed(0))
    assert timesteps.min() >= 0 and timesteps.max() <= 999
    k = 49 - torch.div(timesteps, 20, rounding_mode="floor")  # ascending bin j = t // 20, k = 49 - j
    share = torch.bincount(k, minlength=50).double() / draws
    expected = torch.tensor([0.9**k / 9.948462 for k in range(50)], dtype=torch.float64)
    assert expected[0].item() == pytest.approx(0.100518, abs=1e-6)
    assert torch.all((share - expected).abs() < 0.01)
    standard_error = torch.sqrt(expected * (1 - expected) / draws)
    assert torch.all((share - expected).abs() < 5 * standard_error)


def test_gamma_one_is_uniform():
    """gamma = 1 with 50 equal bins of 20: every t has probability 1/1000."""
    probabilities = GammaBinnedSampler(1000, gamma=1.0, bins=50).probabilities()
    assert torch.allclose(probabilities, torch.full((1000,), 1e-3, dtype=torch.float64))
    assert torch.allclose(UniformSampler(1000).probabilities(), probabilities)


def test_samplers_are_reproducible_with_a_generator():
    sampler = make_timestep_sampler("gamma", 1000, gamma=0.9, bins=50)
    first = sampler.sample(64, generator=torch.Generator().manual_seed(7))
    second = sampler.sample(64, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, second)
    uniform = make_timestep_sampler("uniform", 1000).sample(100_000, generator=torch.Generator().manual_seed(1))
    # U{0..999} has mean 499.5 and standard deviation 288.7; the mean of 1e5 draws has s.e. 0.91.
    assert uniform.double().mean().item() == pytest.approx(499.5, abs=5)


@pytest.mark.parametrize("kwargs", [dict(gamma=0.0), dict(gamma=1.2), dict(bins=0), dict(bins=1001)])
def test_bad_sampler_arguments(kwargs):
    with pytest.raises(ValueError):
        make_timestep_sampler("gamma", 1000, **{"gamma": 0.9, "bins": 50, **kwargs})
    with pytest.raises(ValueError, match="valid: gamma, uniform"):
        make_timestep_sampler("cosine", 1000)


def test_inv_sqrt_snr_small_case_by_hand():
    """alphas_cumprod (0.8, 0.5, 0.2): 1/sqrt(SNR) = sqrt((1 - a) / a) = (0.5, 1, 2);
    min-max -> (0, 1/3, 1); lambda = (1, 1.333333, 2)."""
    scale = reward_scale("inv-sqrt-snr", torch.tensor([0.8, 0.5, 0.2]))
    assert scale.tolist() == pytest.approx([1.0, 4 / 3, 2.0], abs=1e-6)
    assert reward_scale("constant", torch.tensor([0.8, 0.5, 0.2])).tolist() == [1.0, 1.0, 1.0]


def test_inv_sqrt_snr_on_the_sd_schedule_runs_from_1_to_2_and_is_monotone():
    """On SD's schedule alphas_cumprod falls with t, so 1/sqrt(SNR) rises: lambda(0) = 1 at the
    clean end, lambda(999) = 2 at the noisy end, strictly increasing in between."""
    scale = reward_scale("inv-sqrt-snr", sd_alphas_cumprod())
    assert scale[0].item() == pytest.approx(1.0)
    assert scale[-1].item() == pytest.approx(2.0)
    assert torch.all(scale[1:] > scale[:-1])


def test_unknown_reward_scale_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid: constant, inv-sqrt-snr"):
        reward_scale("snr", sd_alphas_cumprod(10))


def test_inv_sqrt_snr_is_finite_on_a_zero_terminal_snr_schedule():
    """alphas_cumprod (0.8, 0.5, 0.0): the last t has SNR 0, so 1/sqrt(SNR) is infinite there.
    The finite values are sqrt(0.2/0.8) = 0.5 and sqrt(0.5/0.5) = 1, min-max normalised to 0 and 1,
    so lambda = (1, 2); the zero-SNR t takes the noisy end's 2. Without the rule: NaN."""
    scale = reward_scale("inv-sqrt-snr", torch.tensor([0.8, 0.5, 0.0], dtype=torch.float64))
    assert torch.isfinite(scale).all()
    assert scale.tolist() == pytest.approx([1.0, 2.0, 2.0])
