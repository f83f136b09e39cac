"""Metrics of a returned set of K catalog items, identical for every method so methods compare fairly.

align = mean cos(item, query); div = Vendi of the item embeddings (raw, normalized); ground = groundedness of
what the method generated before grounding (given by the caller); composite with the reward weights;
category_share = distinct categories among the K items / K (fashion: coarse groups; music: primary artists),
a metric no method trains on; WSCR recall/hit against a reference set where one exists.
"""

from __future__ import annotations

import numpy as np

from r4t.config import RewardConfig
from r4t.rewards.terms import composite, diversity, wscr_coverage


def category_share(item_rows: np.ndarray, category_codes: np.ndarray) -> np.ndarray:
    """item_rows: [B, K] catalog rows; category_codes: [N] ints → [B] distinct categories / K."""
    cats = category_codes[item_rows]
    return np.array([len(np.unique(c)) for c in cats], float) / item_rows.shape[1]


def set_quality(query_emb: np.ndarray, item_rows: np.ndarray, item_emb: np.ndarray, ground: np.ndarray,
                reward: RewardConfig) -> dict[str, np.ndarray]:
    """The OAR terms of returned sets and their composite. query_emb: [B, d]; item_rows: [B, K]; ground: [B]."""
    items = item_emb[item_rows]
    align = np.einsum("bkd,bd->b", items.astype(np.float64), query_emb.astype(np.float64)) / item_rows.shape[1]
    div_raw, div = diversity(items)
    return {"ground": np.asarray(ground, float), "div": div, "div_raw": div_raw, "align": align,
            "composite": composite(ground, div, align, reward.w_ground, reward.w_div, reward.w_align)}


def returned_set_metrics(query_emb: np.ndarray, item_rows: np.ndarray, item_emb: np.ndarray,
                         category_codes: np.ndarray, ground: np.ndarray, reward: RewardConfig,
                         retrieved: list[np.ndarray] | None = None,
                         reference: list[set[int] | None] | None = None) -> dict[str, np.ndarray]:
    """query_emb: [B, d]; item_rows: [B, K]; ground: [B]; retrieved/reference per set for WSCR (else NaN)."""
    out = {**set_quality(query_emb, item_rows, item_emb, ground, reward),
           "category_share": category_share(item_rows, category_codes),
           "recall": np.full(len(item_rows), np.nan), "hit": np.full(len(item_rows), np.nan)}
    if retrieved is not None and reference is not None:
        have = [i for i, y in enumerate(reference) if y]
        if have:
            recall, hit = wscr_coverage([retrieved[i] for i in have], [reference[i] for i in have])
            out["recall"][have], out["hit"][have] = recall, hit
    return out
