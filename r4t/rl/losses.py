"""Token-level policy losses for Soft-GRPO (R4T, arXiv 2603.06397) and GRPO with a reference-model KL penalty.

Every loss takes ``logp`` [B, T] (log pi_theta of the sampled tokens, with grad), ``logp_old`` [B, T] (the same
tokens under the sampling policy pi_old; detached here), ``advantages`` [B] (one per sequence, broadcast over its
tokens) and ``mask`` [B, T] (1 = completion token, 0 = padding; padded log-probs must be finite, e.g. 0), plus
keyword settings, and returns ``(loss, stats)``: a scalar tensor and float diagnostics. Config picks one by name:
``get_loss(name)(logp, logp_old, advantages, mask, **settings)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from r4t.rl.registry import Registry

LossFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]
POLICY_LOSSES: Registry[LossFn] = Registry("rl.loss", "policy loss")
register_loss = POLICY_LOSSES.register
get_loss = POLICY_LOSSES.lookup


def ratio(logp: torch.Tensor, logp_old: torch.Tensor) -> torch.Tensor:
    """rho_t = pi_theta(y_t) / pi_old(y_t) = exp(logp - logp_old). [B, T] -> [B, T]."""
    return torch.exp(logp - logp_old)


def clipped_surrogate(rho: torch.Tensor, A: torch.Tensor, clip_eps: float) -> torch.Tensor:
    """-min(rho A, clip(rho, 1-eps, 1+eps) A) per token; clip_eps <= 0 means unclipped, -rho A.

    rho: [B, T]; A: [B, 1] (or anything broadcastable to rho). Returns [B, T].
    """
    if clip_eps <= 0:
        return -rho * A
    return -torch.minimum(rho * A, rho.clamp(1 - clip_eps, 1 + clip_eps) * A)


def clip_active(rho: torch.Tensor, A: torch.Tensor, clip_eps: float) -> torch.Tensor:
    """Where the clipped branch of ``clipped_surrogate`` is taken (its gradient is zero): A > 0 with rho > 1+eps,
    or A < 0 with rho < 1-eps; nowhere when clip_eps <= 0. rho: [B, T], A: [B, 1] -> bool [B, T]."""
    if clip_eps <= 0:
        return torch.zeros_like(rho, dtype=torch.bool)
    return ((A > 0) & (rho > 1 + clip_eps)) | ((A < 0) & (rho < 1 - clip_eps))


def k3(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 = exp(logp_ref - logp) - (logp_ref - logp) - 1 per token: non-negative, and its expectation
    under pi_theta is KL(pi_theta || pi_ref). Written expm1(d) - d, which stays >= 0 in floating point too.
    [B, T] -> [B, T]."""
    d = logp_ref - logp
    return torch.expm1(d) - d


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Reduce per-token values [B, T] over the mask [B, T] to a scalar.

    "token": sum(x * mask) / sum(mask), every completion token of the batch weighs the same.
    "sequence": mean over sequences of each one's masked token mean, every sequence weighs the same.
    Sequences without a mask token are left out of the sequence mean; an all-padding batch gives 0, never NaN.
    """
    m = mask.to(per_token.dtype)
    if mode == "token":
        return (per_token * m).sum() / m.sum().clamp(min=1)
    if mode == "sequence":
        n_tokens = m.sum(dim=-1)
        per_seq = (per_token * m).sum(dim=-1) / n_tokens.clamp(min=1)
        return per_seq.sum() / (n_tokens > 0).sum().clamp(min=1)
    raise ValueError(f"unknown aggregation {mode!r}; expected 'token' or 'sequence'")


def _stats(logp: torch.Tensor, logp_old: torch.Tensor, rho: torch.Tensor, clipped: torch.Tensor,
           mask: torch.Tensor) -> dict[str, float]:
    """Token-mean diagnostics: the two KL estimates between pi_theta and pi_old, clip fraction, mean ratio, and
    mean |log rho|. Zero-mean per-token noise in log rho moves the mean ratio and the KL estimates only at second
    order; mean |log rho| shows it at first order (drift, or sampler and learner numerics that disagree)."""
    with torch.no_grad():
        def mean(x: torch.Tensor) -> float:
            return float(aggregate(x.to(logp.dtype), mask, "token"))
        log_rho = logp - logp_old
        return {"kl_reverse": mean(rho * log_rho), "kl_forward": mean(-log_rho), "clip_frac": mean(clipped),
                "ratio_mean": mean(rho), "abs_log_ratio": mean(log_rho.abs())}


@register_loss("soft_grpo")
def soft_grpo_loss(logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
                   clip_eps: float = 0.2, beta1: float = 0.05, beta2: float = 0.05,
                   aggregation: str = "token") -> tuple[torch.Tensor, dict[str, float]]:
    """Soft-GRPO (R4T): per token, with rho_t = pi_theta(y_t) / pi_old(y_t),

        loss_t = -min(rho_t A, clip(rho_t, 1-eps, 1+eps) A) + beta1 rho_t (log pi_theta - log pi_old)
                 + beta2 (-log pi_theta),

    aggregated over the mask. Under y_t ~ pi_old the beta1 term is an importance-weighted estimate of the reverse
    KL(pi_theta || pi_old), in value and gradient; the beta2 term's gradient equals the gradient of the forward
    KL(pi_old || pi_theta) (its value is that KL plus the entropy of pi_old, a constant in theta).
    logp, logp_old, mask: [B, T]; advantages: [B]. Returns (scalar loss, stats).
    """
    logp_old = logp_old.detach()
    rho, A = ratio(logp, logp_old), advantages[:, None]
    per_token = clipped_surrogate(rho, A, clip_eps) + beta1 * rho * (logp - logp_old) - beta2 * logp
    return aggregate(per_token, mask, aggregation), _stats(logp, logp_old, rho, clip_active(rho, A, clip_eps), mask)


@register_loss("grpo_kl")
def grpo_kl_loss(logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
                 logp_ref: torch.Tensor | None = None, clip_eps: float = 0.2, kl_beta: float = 0.05,
                 aggregation: str = "token") -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO: per token -min(rho_t A, clip(rho_t, 1-eps, 1+eps) A) + kl_beta k3(log pi_theta, log pi_ref).

    logp, logp_old, logp_ref, mask: [B, T]; advantages: [B]. Stats add ``kl_ref``, the masked mean of k3.
    """
    if logp_ref is None:
        raise ValueError("grpo_kl_loss needs logp_ref, the reference model's log-probs of the sampled tokens [B, T]")
    logp_old = logp_old.detach()
    rho, A = ratio(logp, logp_old), advantages[:, None]
    kl = k3(logp, logp_ref.detach())
    loss = aggregate(clipped_surrogate(rho, A, clip_eps) + kl_beta * kl, mask, aggregation)
    stats = _stats(logp, logp_old, rho, clip_active(rho, A, clip_eps), mask)
    stats["kl_ref"] = float(aggregate(kl.detach(), mask, "token"))
    return loss, stats
