"""The set denoiser: a transformer over the L rows of a target set, conditioned on the query embedding.

- No positional encoding and only row-wise maps plus self-attention, so D(P Z) = P D(Z) for any permutation P:
  the set is unordered.
- The noise level enters as sinusoidal features of c_noise through an MLP, added to every row token.
- The query embedding enters by cross-attention to a context of two tokens: the condition (the query
  embedding, or a learned null vector for classifier-free guidance) and a learned constant token, so the
  softmax can weigh query information against a default instead of being identically 1.
- The context keys/values depend only on the condition, so a sampler computes them once per request, not per
  step (`context`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from r4t.diffusion.edm import c_in, c_noise, c_out, c_skip, loss_weight
from r4t.errors import ConfigError

# hidden / MLP / heads / layers / rows. `paper` is PAPER.md's configuration (53.9M parameters at d=128).
PRESETS = {
    "small": dict(hidden=128, mlp=256, heads=4, layers=3, rows=10),
    "paper": dict(hidden=1024, mlp=1024, heads=16, layers=6, rows=12),
}


@dataclass(frozen=True)
class DenoiserConfig:
    dim: int  # d, the target space (the text encoder's dimension)
    rows: int = 10  # L, rows of a target set
    hidden: int = 128
    mlp: int = 256
    heads: int = 4
    layers: int = 3
    noise_features: int = 256

    def __post_init__(self) -> None:
        for name in ("dim", "rows", "hidden", "mlp", "heads", "layers", "noise_features"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name}={getattr(self, name)!r}: must be positive")
        if self.hidden % self.heads:
            raise ConfigError(f"model.hidden={self.hidden}: must be a multiple of model.heads={self.heads}")
        if self.noise_features % 2:
            raise ConfigError(f"model.noise_features={self.noise_features}: must be even")

    @classmethod
    def from_preset(cls, preset: str, dim: int, **overrides) -> "DenoiserConfig":
        if preset not in PRESETS:
            raise ConfigError(f"model.preset={preset!r}: unknown; known: {sorted(PRESETS)}")
        return cls(dim=dim, **{**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}})

    def to_dict(self) -> dict:
        return asdict(self)


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_dim: int):
        super().__init__()
        self.heads = heads
        self.q, self.o = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.k, self.v = nn.Linear(kv_dim, hidden), nn.Linear(kv_dim, hidden)

    def split(self, t: torch.Tensor) -> torch.Tensor:  # [B, n, H] → [B, heads, n, H / heads]
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def keys_values(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split(self.k(source)), self.split(self.v(source))

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor | None = None) -> torch.Tensor:
        out = F.scaled_dot_product_attention(self.split(self.q(x)), *kv, attn_mask=mask)
        return self.o(out.transpose(1, 2).flatten(-2))


class Block(nn.Module):
    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        h = cfg.hidden
        self.norm_self, self.norm_cross, self.norm_mlp = nn.LayerNorm(h), nn.LayerNorm(h), nn.LayerNorm(h)
        self.self_attn = Attention(h, cfg.heads, h)
        self.cross_attn = Attention(h, cfg.heads, cfg.dim)
        self.mlp = nn.Sequential(nn.Linear(h, cfg.mlp), nn.GELU(), nn.Linear(cfg.mlp, h))

    def forward(self, x: torch.Tensor, context_kv: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor | None) -> torch.Tensor:
        y = self.norm_self(x)
        x = x + self.self_attn(y, self.self_attn.keys_values(y), mask)
        x = x + self.cross_attn(self.norm_cross(x), context_kv)
        return x + self.mlp(self.norm_mlp(x))


class SetDenoiser(nn.Module):
    """F of EDM: (c_in-scaled noisy rows [B, L, d], c_noise [B], context) → [B, L, d]."""

    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        self.cfg = cfg
        self.in_proj = nn.Linear(cfg.dim, cfg.hidden)
        half = cfg.noise_features // 2
        # Fixed frequencies, log-spaced over [0.1, 100]: c_noise spans ~[-2.3, 1.1] for sigma in [1e-4, 80],
        # and a 4% change of sigma (0.01 in c_noise) should still turn the fastest band by ~1 radian.
        self.register_buffer("freqs", torch.logspace(-1, 2, half), persistent=True)
        self.noise_mlp = nn.Sequential(nn.Linear(cfg.noise_features, cfg.hidden), nn.SiLU(),
                                       nn.Linear(cfg.hidden, cfg.hidden))
        self.null_condition = nn.Parameter(torch.randn(cfg.dim) / math.sqrt(cfg.dim))
        self.context_token = nn.Parameter(torch.randn(cfg.dim) / math.sqrt(cfg.dim))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm_out = nn.LayerNorm(cfg.hidden)
        self.out_proj = nn.Linear(cfg.hidden, cfg.dim)
        nn.init.zeros_(self.out_proj.weight)  # F starts at 0, so D starts as c_skip x: a stable first step
        nn.init.zeros_(self.out_proj.bias)

    def condition(self, query_emb: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """[B, d] query embeddings, with the learned null vector where `drop` [B] is True."""
        if drop is None:
            return query_emb
        return torch.where(drop[:, None], self.null_condition.to(query_emb.dtype), query_emb)

    def context(self, cond: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per block, the cross-attention keys and values of the context [cond, learned token]."""
        tokens = torch.stack([cond, self.context_token.to(cond.dtype).expand_as(cond)], dim=1)
        return [block.cross_attn.keys_values(tokens) for block in self.blocks]

    def noise_embedding(self, noise: torch.Tensor) -> torch.Tensor:
        angles = noise[:, None].float() * self.freqs[None, :]
        return self.noise_mlp(torch.cat([angles.cos(), angles.sin()], dim=-1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor, context: list[tuple[torch.Tensor, torch.Tensor]],
                valid: torch.Tensor | None = None) -> torch.Tensor:
        """valid: [B, L] bool, False for padding rows (a target with fewer than L rows): no row attends to them."""
        h = self.in_proj(x) + self.noise_embedding(noise)[:, None, :].to(x.dtype)
        mask = None if valid is None else valid[:, None, None, :]
        for block, kv in zip(self.blocks, context):
            h = block(h, kv, mask)
        return self.out_proj(self.norm_out(h))


class EDMDenoiser(nn.Module):
    """D(x; sigma, condition) = c_skip x + c_out F(c_in x; c_noise, condition), with sigma_data stored."""

    def __init__(self, cfg: DenoiserConfig, sigma_data: float):
        super().__init__()
        self.net = SetDenoiser(cfg)
        self.register_buffer("sigma_data", torch.tensor(float(sigma_data)), persistent=True)

    @property
    def cfg(self) -> DenoiserConfig:
        return self.net.cfg

    def forward(self, x: torch.Tensor, sigma: torch.Tensor,
                context: list[tuple[torch.Tensor, torch.Tensor]] | None = None, valid: torch.Tensor | None = None,
                query_emb: torch.Tensor | None = None, drop: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, L, d] noisy rows; sigma: [B]; the condition as a precomputed `context` (samplers: once per
        request) or as `query_emb` [B, d] with `drop` [B] (training: inside forward, as DDP expects). → the x0
        estimate [B, L, d]."""
        if context is None:
            context = self.context(query_emb, drop)
        sd = float(self.sigma_data)
        s = sigma.to(x.dtype)[:, None, None]
        out = self.net(c_in(s, sd) * x, c_noise(sigma), context, valid)
        return c_skip(s, sd) * x + c_out(s, sd) * out

    def context(self, query_emb: torch.Tensor, drop: torch.Tensor | None = None):
        return self.net.context(self.net.condition(query_emb, drop))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def denoising_loss(model: nn.Module, x0: torch.Tensor, query_emb: torch.Tensor, sigma: torch.Tensor,
                   noise: torch.Tensor, drop: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """EDM loss: mean over sets of lambda(sigma) * mean over valid rows of ||D(x0 + sigma n; sigma) - x0||^2 / d.

    model: an EDMDenoiser, possibly DDP-wrapped (so the call goes through its forward); drop [B]: condition
    dropped to the null vector (classifier-free guidance training)."""
    inner = model.module if hasattr(model, "module") else model
    denoised = model(x0 + sigma[:, None, None] * noise, sigma, valid=valid, query_emb=query_emb, drop=drop)
    err = (denoised - x0).square().mean(dim=-1)  # [B, L]
    if valid is not None:
        err = (err * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1)
    else:
        err = err.mean(dim=1)
    return (loss_weight(sigma, float(inner.sigma_data)) * err).mean()
