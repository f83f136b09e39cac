"""Baselines every learned method is compared against: no fan-out, and a category-diverse heuristic."""

from __future__ import annotations

import numpy as np

from r4t.errors import DataError
from r4t.index import ItemIndex


def no_fanout(index: ItemIndex, query_emb: np.ndarray, n: int) -> np.ndarray:
    """The n items nearest to each query. query_emb: [B, d] → rows [B, n]."""
    return index.search(query_emb, n)[1]


def category_diverse(index: ItemIndex, query_emb: np.ndarray, category_codes: np.ndarray, n: int,
                     per_category: int, candidates: int) -> np.ndarray:
    """Greedy by similarity over the `candidates` nearest items, at most `per_category` items per category;
    if the candidates run out of categories, the set is filled with the next most similar items.
    → rows [B, n]."""
    n = min(n, len(index.item_ids))
    rows = index.search(query_emb, max(candidates, n))[1]
    out = np.empty((len(rows), n), dtype=np.int64)
    for b, cand in enumerate(rows):
        cand = cand[cand >= 0]
        counts: dict[int, int] = {}
        picked = []
        for r in cand:
            c = int(category_codes[r])
            if counts.get(c, 0) < per_category:
                counts[c] = counts.get(c, 0) + 1
                picked.append(r)
                if len(picked) == n:
                    break
        if len(picked) < n:
            chosen = set(picked)
            picked += [r for r in cand if r not in chosen][: n - len(picked)]
        if len(picked) < n:
            raise DataError(f"category-diverse baseline: the index returned only {len(picked)} candidates for "
                            f"a set of {n}; raise index.nprobe / index.ef_search or eval.candidates")
        out[b] = picked
    return out
