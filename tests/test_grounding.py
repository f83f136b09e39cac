"""Grounding generated rows to K distinct catalog items."""

from __future__ import annotations

import numpy as np
import pytest

from r4t.errors import DataError
from r4t.grounding import assign_distinct, ground_sets


def test_duplicates_go_to_next_nearest_and_best_match_wins():
    # Two rows both prefer item 7; row 1 matches it better, so row 0 gets its next-nearest (item 3).
    rows = np.array([[7, 3, 5], [7, 9, 3]])
    scores = np.array([[0.8, 0.7, 0.1], [0.9, 0.2, 0.1]], np.float32)
    items, s, source = assign_distinct(scores, rows, 2)
    assert items.tolist() == [7, 3] and source.tolist() == [1, 0]
    assert s.tolist() == pytest.approx([0.9, 0.7])


def test_more_rows_than_k_keeps_the_most_confident_rows():
    rows = np.array([[1, 2], [3, 4], [5, 6]])
    scores = np.array([[0.5, 0.1], [0.9, 0.2], [0.7, 0.3]], np.float32)
    items, _, source = assign_distinct(scores, rows, 2)
    assert items.tolist() == [3, 5] and source.tolist() == [1, 2]


def test_fewer_rows_than_k_share_the_quota():
    rows = np.array([[1, 2, 3, 4], [1, 5, 6, 7]])
    scores = np.array([[0.9, 0.8, 0.7, 0.6], [0.85, 0.5, 0.4, 0.3]], np.float32)
    items, _, source = assign_distinct(scores, rows, 4)
    assert sorted(items.tolist()) == [1, 2, 5, 6]  # each row takes ceil(4/2) = 2 items
    assert sorted(source.tolist()) == [0, 0, 1, 1]
    with pytest.raises(DataError, match="distinct items"):
        assign_distinct(scores[:, :1], rows[:, :1], 4)


def test_ground_sets_on_the_index(tiny_catalog):
    emb = tiny_catalog.emb
    # Five identical rows (all the first item's embedding): a collapsed set still returns 5 distinct items,
    # the first item first and then its nearest neighbours.
    rows = np.repeat(emb[:1][None], 5, axis=1)
    g = ground_sets(tiny_catalog.index, rows, k=5, m=3)
    assert len(set(g.items[0].tolist())) == 5 and g.items[0, 0] == 0
    nearest = tiny_catalog.index.search(emb[:1], 5)[1][0]
    assert sorted(g.items[0].tolist()) == sorted(nearest.tolist())
    assert g.neighbours.shape == (1, 5, 5)
    # Distinct exact rows ground to themselves.
    pick = np.array([[3, 11, 20, 30]])
    g = ground_sets(tiny_catalog.index, emb[pick], k=4)
    assert sorted(g.items[0].tolist()) == sorted(pick[0].tolist())
    assert g.scores.min() == pytest.approx(1.0, abs=1e-5)
