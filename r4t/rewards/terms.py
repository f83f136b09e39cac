"""Set-level reward terms (the paper; docs/architecture.md). Each is a pure batched function returning per-set floats.

Shapes: B sets, k sub-queries (or generated rows) each, d embedding dims; all embeddings unit-norm.
"""

from __future__ import annotations

import numpy as np

from r4t.rewards.vendi import normalized_vendi, vendi_score


def groundedness(rows: np.ndarray, nearest: np.ndarray) -> np.ndarray:
    """r_ground = 1 - mean_i min_c ||e(q_i) - e(c)||₂.

    rows: [B, k, d] generated embeddings (sub-queries or denoiser rows); nearest: [B, k, d] the embedding of
    each row's nearest catalog item. → [B]. The distance is taken in float64 from the vectors themselves:
    going through the float32 inner product (sqrt(2 - 2 cos)) turns a 1e-7 rounding error into 5e-4.
    """
    diff = np.asarray(rows, np.float64) - np.asarray(nearest, np.float64)
    return 1.0 - np.linalg.norm(diff, axis=-1).mean(axis=-1)


def alignment(rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """r_align = mean_i cos(e(q_i), e(q)). rows: [B, k, d], query: [B, d] → [B]."""
    return np.einsum("bkd,bd->bk", np.asarray(rows, np.float64), np.asarray(query, np.float64)).mean(axis=-1)


def diversity(item_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vendi of the retrieved items' embeddings [B, k, d] → (raw in [1, k], normalized in [0, 1]), each [B]."""
    raw = vendi_score(item_emb)
    return raw, normalized_vendi(raw, item_emb.shape[-2])


def wscr_coverage(retrieved: list[np.ndarray], reference: list[set[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Recall@5K = |Y ∩ R(Q)| / |Y| and Hit@5K = 1[|Y ∩ R(Q)| > 0], per set. → ([B], [B]).

    retrieved: per set, the catalog rows retrieved by all its sub-queries (any shape; -1 padding ignored);
    reference: per set, the catalog rows of the reference set Y.
    """
    hits = np.array([len(set(np.asarray(r).ravel().tolist()) & y) for r, y in zip(retrieved, reference)], float)
    sizes = np.array([len(y) for y in reference], float)
    if np.any(sizes == 0):
        raise ValueError("wscr_coverage: a reference set is empty")
    return hits / sizes, (hits > 0).astype(float)


def soft_coverage(retrieved: np.ndarray, reference: np.ndarray, item_emb: np.ndarray) -> np.ndarray:
    """Soft coverage of the reference set: mean over y in Y of max over r in R(Q) of cos(e(y), e(r)), per set. 1 when
    R(Q) ⊇ Y, at least |Y ∩ R(Q)| / |Y| when no cosine is negative, and it rises as R(Q) nears Y: a dense WSCR
    reward where the exact coverage is almost always 0.

    retrieved: [B, R] catalog rows retrieved by each set's sub-queries (-1 padding ignored); reference: [B, Y]
    catalog rows of each reference set (-1 padding); item_emb: [N, d] unit rows. → [B].
    """
    has_ref, has_item = reference >= 0, retrieved >= 0
    if not has_ref.any(axis=1).all() or not has_item.any(axis=1).all():
        raise ValueError("soft_coverage: a reference set or a retrieved set is empty")
    cos = item_emb[reference].astype(np.float64) @ item_emb[retrieved].astype(np.float64).transpose(0, 2, 1)
    best = np.where(has_item[:, None, :], cos, -np.inf).max(axis=2)  # [B, Y]
    return np.where(has_ref, best, 0.0).sum(axis=1) / has_ref.sum(axis=1)


def composite(ground: np.ndarray, div_norm: np.ndarray, align: np.ndarray, w_ground: float = 0.6,
              w_div: float = 0.2, w_align: float = 0.2) -> np.ndarray:
    """R = w_g r_ground + w_d r_div(normalized) + w_a r_align (paper: 0.6 / 0.2 / 0.2)."""
    return w_ground * np.asarray(ground) + w_div * np.asarray(div_norm) + w_align * np.asarray(align)
