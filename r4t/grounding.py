"""Grounding generated rows (sub-query embeddings or denoiser rows) to K distinct catalog items.

Every fan-out method ends here, so methods differ only in what they generate. Rule (DESIGN.md): greedy by
similarity over all (row, candidate item) pairs, each item used once; a row whose nearest item was taken by a
more similar row gets its next-nearest. With n >= K rows the K most confident rows win; with n < K rows each
row may take up to ceil(K / n) items (a fan-out of 3 sub-queries still returns K items).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from r4t.errors import DataError
from r4t.index import ItemIndex


@dataclass
class GroundedSets:
    items: np.ndarray  # [B, K] catalog rows, distinct within a set, best match first
    scores: np.ndarray  # [B, K] cosine of each item to the row that claimed it
    source: np.ndarray  # [B, K] which generated row claimed each item
    neighbours: np.ndarray  # [B, n, depth] each row's nearest catalog rows (top-m lists for WSCR: [..., :m])


def assign_distinct(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One set: scores/rows [n, depth] nearest lists → (items [k], scores [k], source row [k])."""
    n = len(rows)
    quota = math.ceil(k / n)
    order = np.argsort(-scores, axis=None, kind="stable")
    taken: dict[int, tuple[float, int]] = {}
    per_row = np.zeros(n, dtype=np.int64)
    for flat in order:
        r, j = divmod(int(flat), rows.shape[1])
        item = int(rows[r, j])
        if item < 0 or item in taken or per_row[r] >= quota:
            continue
        taken[item] = (float(scores[r, j]), r)
        per_row[r] += 1
        if len(taken) == k:
            break
    if len(taken) < k:
        raise DataError(f"grounding: only {len(taken)} distinct items reachable for a set of {k}; "
                        f"the catalog or the index search depth is too small")
    items = np.fromiter(taken, dtype=np.int64, count=k)
    return items, np.array([taken[i][0] for i in items], np.float32), np.array([taken[i][1] for i in items])


def ground_sets(index: ItemIndex, rows: np.ndarray, k: int, m: int = 5) -> GroundedSets:
    """rows: [B, n, d] generated embeddings → K distinct items per set, plus each row's top-max(K, m) list.

    A depth of K always suffices: each row's list holds K distinct items, fewer than K of which are taken."""
    B, n, d = rows.shape
    depth = max(k, m)
    scores, found = index.search(rows.reshape(B * n, d), depth)
    scores, found = scores.reshape(B, n, -1), found.reshape(B, n, -1)
    out = [assign_distinct(scores[b], found[b], k) for b in range(B)]
    return GroundedSets(np.stack([o[0] for o in out]), np.stack([o[1] for o in out]),
                        np.stack([o[2] for o in out]), found)
