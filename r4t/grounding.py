"""Grounding generated rows (sub-query embeddings or denoiser rows) to K catalog items distinct to a person.

Every fan-out method ends here, so methods differ only in what they generate. Rule (docs/architecture.md): greedy by
similarity over all (row, candidate item) pairs, at most one item per normalised text (`text_key`: casefolded,
whitespace collapsed, punctuation stripped at the ends), so near-identical catalog entries under different ids
("Home Decor", "home decor.") count once; a row whose nearest item was taken by a more similar row (or shares
its text with a taken item) gets its next-nearest. With n >= K rows the K most confident rows win; with n < K
rows each row may take up to ceil(K / n) items (a fan-out of 3 sub-queries still returns K items). The methods
that pick from the query's own neighbours (no fan-out, category-diverse, MMR) keep the same one-per-text rule.

The text groups are computed once per catalog (`attach_texts`, called where the catalog is prepared) and kept
on its index as `dup_group` [N]. Neighbour lists are searched deep enough to hold K distinct texts
(`search_distinct`), so K items come back whenever the catalog holds K distinct texts. The lists each row
retrieves for WSCR coverage (its top m) stay plain nearest neighbours by id.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from r4t.errors import DataError
from r4t.index import ItemIndex


@dataclass
class GroundedSets:
    items: np.ndarray  # [B, K] catalog rows, distinct texts within a set, best match first
    scores: np.ndarray  # [B, K] cosine of each item to the row that claimed it
    source: np.ndarray  # [B, K] which generated row claimed each item
    neighbours: np.ndarray  # [B, n, depth] each row's nearest rows, -1 padded (top-m lists for WSCR: [..., :m])


def text_key(text: str) -> str:
    """What a person reads as the same text: casefolded, whitespace collapsed, punctuation stripped at the ends
    ("  Home   Decor. " → "home decor")."""
    key = " ".join(text.casefold().split())
    punctuation = "".join(c for c in set(key) if unicodedata.category(c).startswith("P"))
    return key.strip(punctuation + " ")


def text_groups(texts: Sequence[str]) -> np.ndarray:
    """[N] texts → [N] int64 group ids, 0..G-1 in order of first appearance; equal `text_key` ⇔ equal id."""
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(text_key(t), len(ids)) for t in texts], np.int64)


def attach_texts(index: ItemIndex, texts: Sequence[str]) -> ItemIndex:
    """Give the index its items' text groups (`dup_group`), which grounding keeps distinct. → the index."""
    if len(texts) != len(index.item_ids):
        raise DataError(f"grounding: {len(texts)} item texts for an index of {len(index.item_ids)} items")
    index.dup_group = text_groups(texts)
    return index


def item_groups(index: ItemIndex) -> np.ndarray:
    """[N] the index's text groups; an index without them cannot ground."""
    if index.dup_group is None:
        raise DataError("grounding: the index has no item text groups; attach them with "
                        "r4t.grounding.attach_texts(index, texts) (prepare_catalog does)")
    return index.dup_group


def distinct_count(rows: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """rows [q, D] catalog rows (-1 = none) → [q] how many distinct groups each list holds."""
    g = np.sort(np.where(rows >= 0, groups[rows], -1), axis=1)
    return ((np.diff(g, axis=1, prepend=-1) != 0) & (g >= 0)).sum(axis=1)


def distinct_positions(rows: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """One nearest list rows [D] (best first, -1 = none) → positions of the first (nearest) item of each group,
    in list order."""
    valid = np.flatnonzero(rows >= 0)
    first = np.unique(groups[rows[valid]], return_index=True)[1]
    return valid[np.sort(first)]


def _pad(a: np.ndarray, width: int, fill: float) -> np.ndarray:
    return np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=fill)


def search_distinct(index: ItemIndex, queries: np.ndarray, k: int, depth: int,
                    groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """queries [q, d] → (scores [q, D] float32, rows [q, D] int64), best first: each query's nearest list, at
    least `depth` long and searched deeper (doubling) until it holds k distinct groups or the whole catalog.
    Lists shorter than D end in padding (row -1, score -inf). groups [N]: ids 0..G-1, item_groups(index) or
    the row ids themselves."""
    n_groups = int(groups.max()) + 1
    if n_groups < k:
        raise DataError(f"grounding: the catalog holds only {n_groups} distinct item texts, fewer than a set of "
                        f"{k}")
    return _deepen(index, queries, k, depth, groups)


def _deepen(index: ItemIndex, queries: np.ndarray, k: int, depth: int,
            groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, rows = index.search(queries, depth)
    short = np.flatnonzero(distinct_count(rows, groups) < k)
    if len(short) == 0 or depth >= len(groups):
        return scores, rows
    deep_scores, deep_rows = _deepen(index, queries[short], k, 2 * depth, groups)
    scores, rows = _pad(scores, deep_rows.shape[1], -np.inf), _pad(rows, deep_rows.shape[1], -1)
    scores[short], rows[short] = deep_scores, deep_rows
    return scores, rows


def assign_distinct(scores: np.ndarray, rows: np.ndarray, k: int,
                    groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One set: scores/rows [n, depth] nearest lists (-1 = none), groups [N] each item's text group →
    (items [k], scores [k], source row [k]), at most one item per group, best match first."""
    n = len(rows)
    quota = math.ceil(k / n)
    order = np.argsort(-scores, axis=None, kind="stable")
    taken: dict[int, tuple[int, float, int]] = {}  # group → (item, score, row)
    per_row = np.zeros(n, dtype=np.int64)
    for flat in order:
        r, j = divmod(int(flat), rows.shape[1])
        item = int(rows[r, j])
        if item < 0 or per_row[r] >= quota or int(groups[item]) in taken:
            continue
        taken[int(groups[item])] = (item, float(scores[r, j]), r)
        per_row[r] += 1
        if len(taken) == k:
            break
    if len(taken) < k:
        raise DataError(f"grounding: only {len(taken)} items with distinct texts reachable for a set of {k}; "
                        f"the catalog or the index search depth (nprobe / ef_search) is too small")
    items, item_scores, source = zip(*taken.values())
    return np.array(items, np.int64), np.array(item_scores, np.float32), np.array(source, np.int64)


# Rows are searched this many times K (or m) deep at once. An exact search costs about the same at 40 as at 10, and a
# row whose list holds fewer than K distinct texts is searched again; deeper entries never change the sets
# (`assign_distinct` takes a row's item within its first K distinct texts or the set is full before it gets there).
FIRST_DEPTH = 4


def ground_sets(index: ItemIndex, rows: np.ndarray, k: int, m: int = 5) -> GroundedSets:
    """rows: [B, n, d] generated embeddings → K items with distinct texts per set, plus each row's nearest list
    (at least max(K, m) long; its first m by id are the row's WSCR retrievals).

    Each list holds K distinct texts (`search_distinct`), fewer than K of which are taken: every row can claim.
    The search is by cosine: rows off the unit sphere (a denoiser's) are scaled onto it for the search only."""
    B, n, d = rows.shape
    groups = item_groups(index)
    unit = rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)
    scores, found = search_distinct(index, unit.reshape(B * n, d).astype(np.float32), k, FIRST_DEPTH * max(k, m),
                                    groups)
    scores, found = scores.reshape(B, n, -1), found.reshape(B, n, -1)
    out = [assign_distinct(scores[b], found[b], k, groups) for b in range(B)]
    return GroundedSets(np.stack([o[0] for o in out]), np.stack([o[1] for o in out]),
                        np.stack([o[2] for o in out]), found)
