"""The set denoiser: a transformer over the L rows of a target set, conditioned on the query embedding.

- No positional encoding and only row-wise maps plus self-attention, so D(P Z) = P D(Z) for any permutation P:
  the set is unordered. Sampling then has to break the symmetry itself: ten rows drawn alike must agree, through
  self-attention alone, on ten different items, and a small network trained briefly lets several rows land on
  the same item (measured: 7.5 distinct items of 10). With `row_slots` each row carries a learned slot vector
  and the targets are put in one order (`canonical_order`: context items by their place in the list first), so
  slot j learns which item to take; the set is then generated in a fixed order, as a set with named places.
- The noise level enters as sinusoidal features of c_noise through an MLP, added to every row token.
- The query enters by cross-attention to a context of tokens: the query embedding, the embeddings of the C
  catalog items nearest the query (`context_items`; the items the teacher's prompt listed, each with a learned
  rank vector for its place in the list), and a learned constant token, so the softmax can weigh the
  condition against a default. Classifier-free guidance replaces the query by a learned null vector and
  hides the items.
- With context items, a copy head lets each row point at one of them: D = c_skip x + c_out F + (1 - c_skip) P,
  where P is the row's attention-weighted average of the raw item embeddings (or zero, through a learned null
  key). A hidden width below d cannot express a 384-d item embedding; the copy head carries it past that
  bottleneck, and at high noise (c_skip → 0) the estimate starts from the items instead of from nothing.
- The context keys/values depend only on the condition, so a sampler computes them once per request, not per
  step (`context`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from r4t.diffusion.edm import c_in, c_noise, c_out, c_skip, loss_weight
from r4t.errors import ConfigError
from r4t.policy.context import context_embeddings

# hidden / MLP / heads / layers / rows. `paper` is the paper's configuration (53.9M parameters at d=128).
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
    context_items: int = 0  # C: nearest catalog items given with the query (0: the query alone)
    context_per_category: int = 0  # how those items are chosen (r4t.policy.context.PromptContext)
    row_slots: bool = False  # rows carry a learned slot each and targets are put in `canonical_order`

    def __post_init__(self) -> None:
        for name in ("context_items", "context_per_category"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model.{name}={getattr(self, name)!r}: must be >= 0")
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


@dataclass
class Context:
    """The condition of a batch, prepared once per request: per block the cross-attention keys/values, which
    tokens are visible ([B, 1, 1, T] or None: all), and for the copy head the items, their keys and mask."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    mask: torch.Tensor | None = None
    items: torch.Tensor | None = None  # [B, C, d] raw item embeddings
    copy_keys: torch.Tensor | None = None  # [B, C + 1, hidden], the last one the null key (value 0)
    copy_mask: torch.Tensor | None = None  # [B, C + 1] bool


class Block(nn.Module):
    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        h = cfg.hidden
        self.norm_self, self.norm_cross, self.norm_mlp = nn.LayerNorm(h), nn.LayerNorm(h), nn.LayerNorm(h)
        self.self_attn = Attention(h, cfg.heads, h)
        self.cross_attn = Attention(h, cfg.heads, cfg.dim)
        self.mlp = nn.Sequential(nn.Linear(h, cfg.mlp), nn.GELU(), nn.Linear(cfg.mlp, h))

    def forward(self, x: torch.Tensor, context_kv: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor | None, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.norm_self(x)
        x = x + self.self_attn(y, self.self_attn.keys_values(y), mask)
        x = x + self.cross_attn(self.norm_cross(x), context_kv, context_mask)
        return x + self.mlp(self.norm_mlp(x))


class SetDenoiser(nn.Module):
    """F of EDM: (c_in-scaled noisy rows [B, L, d], c_noise [B], context) → ([B, L, d], the copy P or None)."""

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
        if cfg.context_items:
            self.item_rank = nn.Parameter(torch.zeros(cfg.context_items, cfg.dim))
            self.copy_query = nn.Linear(cfg.hidden, cfg.hidden)
            self.copy_key = nn.Linear(cfg.dim, cfg.hidden)
            self.copy_null = nn.Parameter(torch.zeros(cfg.hidden))
        if cfg.row_slots:
            self.row_slot = nn.Parameter(torch.randn(cfg.rows, cfg.hidden) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm_out = nn.LayerNorm(cfg.hidden)
        self.out_proj = nn.Linear(cfg.hidden, cfg.dim)
        nn.init.zeros_(self.out_proj.weight)  # F starts at 0, so D starts as c_skip x: a stable first step
        nn.init.zeros_(self.out_proj.bias)

    def context(self, query_emb: torch.Tensor, items: torch.Tensor | None = None,
                items_valid: torch.Tensor | None = None, drop: torch.Tensor | None = None) -> Context:
        """query_emb [B, d]; items [B, C, d] with items_valid [B, C] (False: padding) when cfg.context_items;
        drop [B]: the query replaced by the learned null vector and the items hidden (classifier-free guidance)."""
        C = self.cfg.context_items
        cond = query_emb if drop is None else torch.where(drop[:, None], self.null_condition.to(query_emb.dtype),
                                                          query_emb)
        const = self.context_token.to(cond.dtype).expand_as(cond)
        if not C:
            tokens = torch.stack([cond, const], dim=1)
            return Context([block.cross_attn.keys_values(tokens) for block in self.blocks])
        if items is None or items.shape[1:] != (C, self.cfg.dim):
            raise ValueError(f"this denoiser is conditioned on {C} context items: pass items [B, {C}, "
                             f"{self.cfg.dim}], got {None if items is None else tuple(items.shape)}")
        B = len(cond)
        seen = torch.ones(B, C, dtype=torch.bool, device=cond.device) if items_valid is None else items_valid
        if drop is not None:
            seen = seen & ~drop[:, None]
        always = torch.ones(B, 1, dtype=torch.bool, device=cond.device)
        mask = torch.cat([always, seen, always], dim=1)
        # Every map of an item token (the copy key, each block's cross-attention key and value) is one product
        # with the items, and the learned rank vector (an item's place in the list, nearest first) is projected
        # apart: W (item + rank) = W item + W rank. The items are constants, so training never computes a
        # gradient for the [B, C, d] inputs, which was a third of the condition's cost.
        maps = [self.copy_key] + [lin for block in self.blocks for lin in (block.cross_attn.k, block.cross_attn.v)]
        weight = torch.cat([lin.weight for lin in maps]).to(items.dtype)
        bias = torch.cat([lin.bias for lin in maps]).to(items.dtype)
        projected = F.linear(items, weight, bias) + F.linear(self.item_rank.to(items.dtype), weight)
        copy_keys, *item_kv = projected.split(self.cfg.hidden, dim=-1)
        copy_keys = torch.cat([copy_keys, self.copy_null.to(items.dtype).expand(B, 1, -1)], dim=1)
        ends = torch.stack([cond, const], dim=1)  # the query (or the null vector) and the constant token
        kv = []
        for i, block in enumerate(self.blocks):
            k_ends, v_ends = block.cross_attn.k(ends), block.cross_attn.v(ends)
            k = torch.cat([k_ends[:, :1], item_kv[2 * i], k_ends[:, 1:]], dim=1)
            v = torch.cat([v_ends[:, :1], item_kv[2 * i + 1], v_ends[:, 1:]], dim=1)
            kv.append((block.cross_attn.split(k), block.cross_attn.split(v)))
        return Context(kv, mask[:, None, None, :], items, copy_keys, torch.cat([seen, always], dim=1))

    def noise_embedding(self, noise: torch.Tensor) -> torch.Tensor:
        angles = noise[:, None].float() * self.freqs[None, :]
        return self.noise_mlp(torch.cat([angles.cos(), angles.sin()], dim=-1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor, context: Context,
                valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """valid: [B, L] bool, False for padding rows (a target with fewer than L rows): no row attends to them."""
        h = self.in_proj(x) + self.noise_embedding(noise)[:, None, :].to(x.dtype)
        if self.cfg.row_slots:
            h = h + self.row_slot[:x.shape[1]].to(x.dtype)
        mask = None if valid is None else valid[:, None, None, :]
        for block, kv in zip(self.blocks, context.kv):
            h = block(h, kv, mask, context.mask)
        h = self.norm_out(h)
        if context.items is None:
            return self.out_proj(h), None
        logits = self.copy_query(h) @ context.copy_keys.transpose(1, 2) / math.sqrt(self.cfg.hidden)  # [B, L, C+1]
        weights = logits.masked_fill(~context.copy_mask[:, None, :], float("-inf")).softmax(dim=-1)
        return self.out_proj(h), weights[..., :-1] @ context.items  # the null key's value is 0


class EDMDenoiser(nn.Module):
    """D(x; sigma, condition) = c_skip x + c_out F(c_in x; c_noise, condition) [+ (1 - c_skip) P, the copy head],
    with sigma_data stored."""

    def __init__(self, cfg: DenoiserConfig, sigma_data: float):
        super().__init__()
        self.net = SetDenoiser(cfg)
        self.register_buffer("sigma_data", torch.tensor(float(sigma_data)), persistent=True)

    @property
    def cfg(self) -> DenoiserConfig:
        return self.net.cfg

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, context: Context | None = None,
                valid: torch.Tensor | None = None, query_emb: torch.Tensor | None = None,
                drop: torch.Tensor | None = None, items: torch.Tensor | None = None,
                items_valid: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, L, d] noisy rows; sigma: [B]; the condition as a precomputed `context` (samplers: once per
        request) or as `query_emb` [B, d] (and `items`, `items_valid`) with `drop` [B] (training: inside
        forward, as DDP expects). → the x0 estimate [B, L, d]."""
        if context is None:
            context = self.context(query_emb, items, items_valid, drop)
        sd = float(self.sigma_data)
        s = sigma.to(x.dtype)[:, None, None]
        out, copied = self.net(c_in(s, sd) * x, c_noise(sigma), context, valid)
        skip = c_skip(s, sd)
        denoised = skip * x + c_out(s, sd) * out
        return denoised if copied is None else denoised + (1 - skip) * copied

    def context(self, query_emb: torch.Tensor, items: torch.Tensor | None = None,
                items_valid: torch.Tensor | None = None, drop: torch.Tensor | None = None) -> Context:
        return self.net.context(query_emb, items, items_valid, drop)


def canonical_order(x0: torch.Tensor, valid: torch.Tensor, query_emb: torch.Tensor,
                    items: torch.Tensor | None = None, items_valid: torch.Tensor | None = None,
                    same: float = 0.999) -> tuple[torch.Tensor, torch.Tensor]:
    """A target set's rows in one order, for a denoiser with row slots: rows that are a context item
    (cosine >= `same`) by the item's place in the list, then the others by cosine to the query, padding last.
    x0 [B, L, d], valid [B, L] → (x0, valid) reordered."""
    to_query = torch.einsum("bld,bd->bl", x0, query_emb)
    key = 2.0 - to_query  # after every context rank below, nearest to the query first
    if items is not None:
        sim = torch.einsum("bld,bcd->blc", x0, items)
        if items_valid is not None:
            sim = sim.masked_fill(~items_valid[:, None, :], -2.0)
        best, rank = sim.max(dim=-1)
        key = torch.where(best >= same, rank.to(key.dtype) - items.shape[1] - 4.0, key)
    key = key.masked_fill(~valid, float("inf"))
    order = key.argsort(dim=1)
    return x0.gather(1, order[..., None].expand_as(x0)), valid.gather(1, order)


def context_tensors(rows: np.ndarray | None, item_emb: np.ndarray,
                    device: str | torch.device = "cpu") -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Padded context rows [B, C] (-1: none; r4t.policy.context) → the `items` [B, C, d] and `items_valid` [B, C]
    a denoiser with context items takes, or (None, None) for one without."""
    if rows is None:
        return None, None
    items, valid = context_embeddings(np.asarray(rows), item_emb)
    return torch.from_numpy(items).to(device), torch.from_numpy(valid).to(device)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def denoising_loss(model: nn.Module, x0: torch.Tensor, query_emb: torch.Tensor, sigma: torch.Tensor,
                   noise: torch.Tensor, drop: torch.Tensor, valid: torch.Tensor | None = None,
                   items: torch.Tensor | None = None, items_valid: torch.Tensor | None = None) -> torch.Tensor:
    """EDM loss: mean over sets of lambda(sigma) * mean over valid rows of ||D(x0 + sigma n; sigma) - x0||^2 / d.

    model: an EDMDenoiser, possibly DDP-wrapped (so the call goes through its forward); drop [B]: condition
    dropped to the null vector (classifier-free guidance training); items [B, C, d], items_valid [B, C]: the
    context items of a model with cfg.context_items."""
    inner = model.module if hasattr(model, "module") else model
    denoised = model(x0 + sigma[:, None, None] * noise, sigma, valid=valid, query_emb=query_emb, drop=drop,
                     items=items, items_valid=items_valid)
    err = (denoised - x0).square().mean(dim=-1)  # [B, L]
    if valid is not None:
        err = (err * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1)
    else:
        err = err.mean(dim=1)
    return (loss_weight(sigma, float(inner.sigma_data)) * err).mean()
