"""A fan-out policy that acts in embedding space: no language model.

The action for a query embedding q [d] is k rows of coefficients a_i in [-1, 1]^r over a fixed basis B [r, d]
(orthonormal rows); each row becomes one "sub-query" embedding

    row_i = normalize(q + scale * (clip(a_i + o_i, -1, 1) @ B) / sqrt(r))                 (LatentAction.rows)

`scale` bounds how far a row can move (|c @ B| / sqrt(r) <= 1 for c in the box). The offsets o_i [k, r] are fixed
(seeded, uniform in [-offset, offset]): with offset 0 the zero action puts all k rows on the query (no fan-out),
but then the k rows start identical and PPO breaks that symmetry slowly (measured: BENCHMARKS.md); distinct
offsets start the rows apart, and the policy learns a per-query residual around them. Rows are grounded through
the index like any generated rows. The basis is the top r principal directions of the item embeddings (`pca`:
k x r = 160 actions instead of k x d = 3,840) or the identity (`identity`: r = d, the full action).

The trained policy is exported as `policy.safetensors` (actor weights, basis, offsets) + `policy.json`
(architecture, action parameterization, manifest), and loaded here without RLlib and without unpickling.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from r4t.errors import DataError
from r4t.io import atomic_folder, check_manifest, read_json, write_json

WEIGHTS, CONFIG_FILE = "policy.safetensors", "policy.json"
LOG_STD_CLIP = 20.0  # RLlib's log_std_clip_param default


def pca_basis(item_emb: np.ndarray, rank: int) -> np.ndarray:
    """Top `rank` principal directions of the (centered) item embeddings [N, d] → [rank, d], orthonormal rows,
    sign fixed so that each direction's largest-magnitude coordinate is positive (deterministic)."""
    x = np.asarray(item_emb, np.float64)
    if rank > min(x.shape):
        raise DataError(f"action.rank={rank}: more directions than the catalog has "
                        f"({x.shape[0]} items, dim {x.shape[1]})")
    _, _, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    basis = vt[:rank]
    signs = np.sign(basis[np.arange(rank), np.abs(basis).argmax(axis=1)])
    return (basis * signs[:, None]).astype(np.float32)


def make_offsets(k: int, rank: int, offset: float, seed: int) -> np.ndarray:
    """Fixed per-row action offsets [k, rank], uniform in [-offset, offset] (zeros for offset 0)."""
    return (offset * np.random.default_rng([seed, k, rank]).uniform(-1, 1, (k, rank))).astype(np.float32)


def make_basis(kind: str, rank: int, item_emb: np.ndarray) -> np.ndarray:
    if kind == "identity":
        return np.eye(item_emb.shape[1], dtype=np.float32)
    if kind == "pca":
        return pca_basis(item_emb, rank)
    raise DataError(f"action.basis={kind!r}: unknown (pca or identity)")


@dataclass(frozen=True)
class LatentAction:
    """The action parameterization: k rows of r coefficients over `basis` [r, d], residual `scale`, fixed
    per-row `offsets` [k, r]."""

    k: int
    basis: np.ndarray
    scale: float
    offsets: np.ndarray

    @property
    def rank(self) -> int:
        return self.basis.shape[0]

    @property
    def dim(self) -> int:
        return self.k * self.rank

    def rows(self, query_emb: np.ndarray, action: np.ndarray) -> np.ndarray:
        """query_emb [B, d], action [B, k * r] (clipped to [-1, 1]) → unit rows [B, k, d] float32."""
        B = len(query_emb)
        a = np.clip(np.asarray(action, np.float32).reshape(B, self.k, self.rank), -1.0, 1.0)
        a = np.clip(a + self.offsets, -1.0, 1.0)
        x = query_emb[:, None, :] + (self.scale / np.sqrt(self.rank)) * (a @ self.basis)
        return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


class ActorMLP(torch.nn.Module):
    """The actor of RLlib's default PPO module, rebuilt from its weights: hidden Linear layers with the encoder's
    activation, then one Linear head giving [mean, log_std] of a diagonal Gaussian over the action."""

    def __init__(self, obs_dim: int, hidden: list[int], action_dim: int, activation: str):
        super().__init__()
        sizes = [obs_dim, *hidden]
        self.hidden = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = torch.nn.Linear(sizes[-1], 2 * action_dim)
        self.act = {"tanh": torch.tanh, "relu": torch.relu}[activation]

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = obs
        for layer in self.hidden:
            x = self.act(layer(x))
        mean, log_std = self.head(x).chunk(2, dim=-1)
        return mean, log_std.clamp(-LOG_STD_CLIP, LOG_STD_CLIP)


def actor_state_from_rllib(state: dict[str, torch.Tensor], n_hidden: int) -> dict[str, torch.Tensor]:
    """RLlib's DefaultPPOTorchRLModule state dict → ActorMLP's (the critic is dropped). Names checked."""
    out = {}
    for i in range(n_hidden):
        for p in ("weight", "bias"):
            key = f"encoder.actor_encoder.net.mlp.{2 * i}.{p}"
            if key not in state:
                raise DataError(f"RLlib module state has no {key!r}; keys: {sorted(state)[:8]}...")
            out[f"hidden.{i}.{p}"] = state[key]
    heads = sorted({k for k in state if k.startswith("pi.net.mlp.") and k.endswith(".weight")})
    if heads != ["pi.net.mlp.0.weight"]:
        raise DataError(f"RLlib policy head must be one Linear layer (rl_module head_fcnet_hiddens=[]); found {heads}")
    out["head.weight"], out["head.bias"] = state["pi.net.mlp.0.weight"], state["pi.net.mlp.0.bias"]
    return {k: torch.as_tensor(np.asarray(v)).detach().clone().float().contiguous() for k, v in out.items()}


def export_policy(folder: Path, actor_state: dict[str, torch.Tensor], latent: LatentAction, spec: dict,
                  manifest: dict) -> Path:
    """Write <folder>/policy.safetensors + policy.json whole or not at all. spec: obs_dim, hidden, activation."""
    with atomic_folder(folder) as tmp:
        save_file({**actor_state, "basis": torch.from_numpy(np.ascontiguousarray(latent.basis)),
                   "offsets": torch.from_numpy(np.ascontiguousarray(latent.offsets))}, str(tmp / WEIGHTS))
        write_json(tmp / CONFIG_FILE, {"k": latent.k, "rank": latent.rank, "scale": latent.scale, **spec,
                                       "manifest": manifest})
    return folder


@dataclass
class PolicyInfo:
    k: int
    rank: int
    scale: float
    obs_dim: int
    hidden: list[int]
    activation: str


class LatentPolicy:
    """The exported policy, for retrieval and synthesis: query embeddings → k rows each (safetensors only)."""

    def __init__(self, actor: ActorMLP, latent: LatentAction, info: PolicyInfo, manifest: dict):
        self.actor, self.latent, self.info, self.manifest = actor.eval(), latent, info, manifest

    @classmethod
    def load(cls, folder: str | os.PathLike, expect: dict | None = None) -> "LatentPolicy":
        folder = Path(folder)
        raw = read_json(folder / CONFIG_FILE)
        check_manifest(raw.get("manifest", {}), expect or {}, str(folder / CONFIG_FILE))
        try:
            info = PolicyInfo(**{k: raw[k] for k in PolicyInfo.__dataclass_fields__})
        except KeyError as e:
            raise DataError(f"{folder / CONFIG_FILE}: missing field {e}") from None
        tensors = load_file(str(folder / WEIGHTS))
        basis, offsets = tensors.pop("basis", None), tensors.pop("offsets", None)
        if basis is None or tuple(basis.shape) != (info.rank, info.obs_dim):
            raise DataError(f"{folder / WEIGHTS}: basis missing or not [{info.rank}, {info.obs_dim}]")
        if offsets is None or tuple(offsets.shape) != (info.k, info.rank):
            raise DataError(f"{folder / WEIGHTS}: offsets missing or not [{info.k}, {info.rank}]")
        actor = ActorMLP(info.obs_dim, info.hidden, info.k * info.rank, info.activation)
        try:
            actor.load_state_dict(tensors)
        except RuntimeError as e:
            raise DataError(f"{folder / WEIGHTS}: does not fit {folder / CONFIG_FILE} ({str(e).splitlines()[0]})") \
                from None
        return cls(actor, LatentAction(info.k, basis.numpy(), float(info.scale), offsets.numpy()), info,
                   raw.get("manifest", {}))

    @torch.no_grad()
    def actions(self, query_emb: np.ndarray, sample: bool = False, temperature: float = 1.0,
                seed: int = 0) -> np.ndarray:
        """[B, d] → actions [B, k * r]: the Gaussian's mean, or (sample) mean + temperature * std * N(0, 1)."""
        mean, log_std = self.actor(torch.from_numpy(np.asarray(query_emb, np.float32)))
        if not sample:
            return mean.numpy()
        g = torch.Generator().manual_seed(int(seed))
        return (mean + temperature * log_std.exp() * torch.randn(mean.shape, generator=g)).numpy()

    def rows(self, query_emb: np.ndarray, sample: bool = False, temperature: float = 1.0, seed: int = 0) -> np.ndarray:
        """[B, d] → unit rows [B, k, d] (the deterministic policy unless `sample`)."""
        return self.latent.rows(query_emb, self.actions(query_emb, sample, temperature, seed))
