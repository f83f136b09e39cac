"""EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models"), VE form.

Data x0 is noised as x = x0 + sigma * n. The network F is wrapped so that the denoiser
    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma))
predicts x0 with unit-variance inputs and targets at every noise level. Each coefficient below is the paper's
formula (its Table 1), written as one function named after its symbol.
"""

from __future__ import annotations

import math

import torch


def c_skip(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    return sigma_data**2 / (sigma**2 + sigma_data**2)


def c_out(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    return sigma * sigma_data / (sigma**2 + sigma_data**2).sqrt()


def c_in(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    return 1.0 / (sigma**2 + sigma_data**2).sqrt()


def c_noise(sigma: torch.Tensor) -> torch.Tensor:
    return sigma.log() / 4


def loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2: makes the effective target of F
    unit-variance, so every noise level contributes alike."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def training_sigma(n: int, sigma_data: float, p_mean: float, p_std: float,
                   generator: torch.Generator | None = None, device: str | torch.device = "cpu",
                   uniform: float = 0.0, sigma_min: float = 1e-3, sigma_max: float = 1.0) -> torch.Tensor:
    """ln(sigma / sigma_data) ~ N(p_mean, p_std^2), and with probability `uniform` instead ln sigma uniform over
    [ln sigma_min, ln sigma_max].

    EDM's ln(sigma) ~ N(-1.2, 1.2^2) is tuned for sigma_data = 0.5; unit-norm embeddings have sigma_data near
    1/sqrt(d) (0.05 for d=384), so the distribution is placed relative to sigma_data
    (p_mean = ln(0.6) reproduces EDM's ratio median sigma / sigma_data = 0.6). The log-normal alone puts almost
    no mass where a sampler starts (sigma_max); the log-uniform share makes every level the sampler visits one
    the network was trained at (`covered_sigmas`)."""
    z = torch.randn(n, generator=generator, device=device)
    sigma = sigma_data * torch.exp(p_mean + p_std * z)
    if uniform <= 0:
        return sigma
    u = torch.rand(n, generator=generator, device=device)
    log_uniform = torch.exp(math.log(sigma_min) + u * (math.log(sigma_max) - math.log(sigma_min)))
    pick = torch.rand(n, generator=generator, device=device) < uniform
    return torch.where(pick, log_uniform, sigma)


def covered_sigmas(sigma_data: float, p_mean: float, p_std: float, uniform: float, sigma_min: float,
                   sigma_max: float, tail: float = 1e-3) -> tuple[float, float]:
    """The noise levels training samples with non-negligible probability: the [tail, 1 - tail] quantiles of
    the log-normal part, widened to [sigma_min, sigma_max] when the log-uniform part has weight."""
    z = math.sqrt(2) * torch.erfinv(torch.tensor(1 - 2 * tail, dtype=torch.float64)).item()
    lo, hi = sigma_data * math.exp(p_mean - p_std * z), sigma_data * math.exp(p_mean + p_std * z)
    return (min(lo, sigma_min), max(hi, sigma_max)) if uniform > 0 else (lo, hi)


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """EDM time discretization: sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho for
    i < N, then sigma_N = 0. → [steps + 1], decreasing, float64."""
    if steps < 1:
        raise ValueError(f"sampler steps must be >= 1, got {steps}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    i = torch.arange(steps, dtype=torch.float64)
    frac = i / max(steps - 1, 1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + frac * (lo - hi)) ** rho
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])

