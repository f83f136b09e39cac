"""Samplers for the EDM denoiser: Euler and Heun on the probability-flow ODE (Heun with optional churn, EDM's
stochastic sampler), and an ancestral SDE sampler; classifier-free guidance in one batched forward pass.

The probability-flow ODE of the VE process is dx/dsigma = (x - D(x; sigma)) / sigma, integrated from
sigma_max down to 0 over the EDM time discretization (`karras_sigmas`).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from r4t.config import SamplerConfig
from r4t.diffusion.denoiser import EDMDenoiser
from r4t.diffusion.edm import covered_sigmas, karras_sigmas
from r4t.errors import ConfigError

DenoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x [B, L, d], sigma scalar) → x0 estimate


def guided(model: EDMDenoiser, query_emb: torch.Tensor, guidance: float, items: torch.Tensor | None = None,
           items_valid: torch.Tensor | None = None) -> DenoiseFn:
    """The CFG denoiser D_cond + w (D_cond - D_null) for a batch of queries [B, d] (and their context items
    [B, C, d] for a model with context items). The conditional and null passes run as one forward pass of batch
    2B; the context keys/values are computed once, not per step. With w = 0 only the conditional pass runs."""
    B = len(query_emb)
    if guidance == 0:
        context = model.context(query_emb, items, items_valid)
        return lambda x, sigma: model(x, sigma.expand(B), context)
    drop = torch.arange(2 * B, device=query_emb.device) >= B

    def twice(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else torch.cat([t, t])

    context = model.context(twice(query_emb), twice(items), twice(items_valid), drop)

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        cond, null = model(torch.cat([x, x]), sigma.expand(2 * B), context).chunk(2)
        return cond + guidance * (cond - null)

    return denoise


def check_sampler_range(settings: SamplerConfig, manifest: dict, where: str = "the model's training") -> None:
    """The sampler must stay at noise levels its model was trained at: a network evaluated at a sigma training
    never drew answers with whatever it extrapolates. manifest: the exported model's (sigma_data, train)."""
    train = manifest.get("train")
    if not train:
        return  # a model exported without its training settings (tests build some by hand)
    lo, hi = covered_sigmas(manifest["sigma_data"], train["p_mean"], train["p_std"], train.get("sigma_uniform", 0.0),
                            train.get("sigma_min", 1.0), train.get("sigma_max", 1.0))
    for name, value in (("sigma_max", settings.sigma_max), ("sigma_min", settings.sigma_min)):
        if not lo * 0.999 <= value <= hi * 1.001:
            raise ConfigError(f"sampler.{name}={value:g}: outside the noise levels {where} draws, [{lo:.3g}, "
                              f"{hi:.3g}]; sample inside them, or train with train.sigma_min/sigma_max covering it")


@torch.no_grad()
def sample(denoise: DenoiseFn, shape: tuple[int, ...], settings: SamplerConfig,
           generator: torch.Generator | None = None, device: str | torch.device = "cpu",
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Draw x0 of `shape` ([B, L, d]) by integrating from sigma_max to 0. Deterministic given `generator`."""
    s = settings
    sigmas = karras_sigmas(s.steps, s.sigma_min, s.sigma_max, s.rho).tolist()

    def noise() -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def at(value: float) -> torch.Tensor:
        return torch.tensor(value, device=device, dtype=dtype)

    x = noise() * sigmas[0]
    for sigma, nxt in zip(sigmas[:-1], sigmas[1:]):
        if s.method == "sde":
            x = _ancestral_step(denoise, x, sigma, nxt, noise, at)
            continue
        gamma = 0.0
        if s.method == "heun" and s.churn > 0 and s.churn_min <= sigma <= s.churn_max:
            gamma = min(s.churn / s.steps, math.sqrt(2) - 1)
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:  # raise the noise level to sigma_hat by adding fresh noise, then solve from there
            x = x + math.sqrt(sigma_hat**2 - sigma**2) * s.s_noise * noise()
        slope = (x - denoise(x, at(sigma_hat))) / sigma_hat
        x_next = x + (nxt - sigma_hat) * slope
        if s.method == "heun" and nxt > 0:  # 2nd order: average the slopes at both ends
            slope_next = (x_next - denoise(x_next, at(nxt))) / nxt
            x_next = x + (nxt - sigma_hat) * 0.5 * (slope + slope_next)
        x = x_next
    return x


def _ancestral_step(denoise: DenoiseFn, x: torch.Tensor, sigma: float, nxt: float, noise, at) -> torch.Tensor:
    """One reverse-SDE step as the Gaussian posterior of the VE process given the x0 estimate D:
    x_next ~ N(D + (nxt/sigma)^2 (x - D), nxt^2 (sigma^2 - nxt^2) / sigma^2). Exact when D is, and it lands on
    D itself at the last step (nxt = 0)."""
    d = denoise(x, at(sigma))
    ratio = (nxt / sigma) ** 2
    std = nxt * math.sqrt(max(sigma**2 - nxt**2, 0.0)) / sigma
    return d + ratio * (x - d) + (std * noise() if std > 0 else 0.0)


@torch.inference_mode()
def generate_sets(model: EDMDenoiser, query_emb: torch.Tensor, settings: SamplerConfig, rows: int | None = None,
                  generator: torch.Generator | None = None, items: torch.Tensor | None = None,
                  items_valid: torch.Tensor | None = None) -> torch.Tensor:
    """[B, d] query embeddings (and [B, C, d] context items for a model with context items) → [B, L, d]
    generated rows as sampled: near, not on, the unit sphere of the targets. Grounding searches by cosine, and
    the groundedness of what was generated is measured on these raw rows."""
    p = next(model.parameters())
    q = query_emb.to(device=p.device, dtype=p.dtype)
    if items is not None:
        items = items.to(device=p.device, dtype=p.dtype)
        items_valid = None if items_valid is None else items_valid.to(p.device)
    shape = (len(q), rows or model.cfg.rows, model.cfg.dim)
    return sample(guided(model, q, settings.guidance, items, items_valid), shape, settings, generator, p.device,
                  p.dtype)
