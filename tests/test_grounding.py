"""Grounding generated rows to K catalog items with distinct (normalised) texts."""

from __future__ import annotations

import numpy as np
import pytest

from r4t.errors import DataError
from r4t.grounding import assign_distinct, attach_texts, ground_sets, item_groups, text_groups, text_key
from r4t.index import ItemIndex

IDS = np.arange(10)  # every item its own text


def test_duplicates_go_to_next_nearest_and_best_match_wins():
    # Two rows both prefer item 7; row 1 matches it better, so row 0 gets its next-nearest (item 3).
    rows = np.array([[7, 3, 5], [7, 9, 3]])
    scores = np.array([[0.8, 0.7, 0.1], [0.9, 0.2, 0.1]], np.float32)
    items, s, source = assign_distinct(scores, rows, 2, IDS)
    assert items.tolist() == [7, 3] and source.tolist() == [1, 0]
    assert s.tolist() == pytest.approx([0.9, 0.7])


def test_more_rows_than_k_keeps_the_most_confident_rows():
    rows = np.array([[1, 2], [3, 4], [5, 6]])
    scores = np.array([[0.5, 0.1], [0.9, 0.2], [0.7, 0.3]], np.float32)
    items, _, source = assign_distinct(scores, rows, 2, IDS)
    assert items.tolist() == [3, 5] and source.tolist() == [1, 2]


def test_fewer_rows_than_k_share_the_quota():
    rows = np.array([[1, 2, 3, 4], [1, 5, 6, 7]])
    scores = np.array([[0.9, 0.8, 0.7, 0.6], [0.85, 0.5, 0.4, 0.3]], np.float32)
    items, _, source = assign_distinct(scores, rows, 4, IDS)
    assert sorted(items.tolist()) == [1, 2, 5, 6]  # each row takes ceil(4/2) = 2 items
    assert sorted(source.tolist()) == [0, 0, 1, 1]
    with pytest.raises(DataError, match="distinct texts reachable"):
        assign_distinct(scores[:, :1], rows[:, :1], 4, IDS)


@pytest.mark.parametrize("n, k", [(10, 10), (12, 10), (3, 10)])
def test_entries_past_k_distinct_texts_never_change_a_set(n: int, k: int):
    """Why ground_sets may search deeper than it needs: each row's list cut after its first k distinct texts
    (padding after) assigns the same set as the whole list."""
    rng = np.random.default_rng(n)
    groups = rng.integers(0, 40, size=200)  # many items share a text
    for _ in range(20):
        rows = np.stack([rng.permutation(200)[:60] for _ in range(n)])
        scores = -np.sort(-rng.random((n, 60)), axis=1)  # each row's list best first
        cut_rows, cut_scores = np.full_like(rows, -1), np.full_like(scores, -np.inf)
        for r in range(n):
            _, first = np.unique(groups[rows[r]], return_index=True)
            end = np.sort(first)[k - 1] + 1  # through the k-th distinct text
            cut_rows[r, :end], cut_scores[r, :end] = rows[r, :end], scores[r, :end]
        for whole, cut in zip(assign_distinct(scores, rows, k, groups), assign_distinct(cut_scores, cut_rows, k, groups)):
            np.testing.assert_array_equal(whole, cut)


def test_ground_sets_on_the_index(tiny_catalog):
    emb = tiny_catalog.emb
    # Five identical rows (all the first item's embedding): a collapsed set still returns 5 distinct items,
    # the first item first and then its nearest neighbours.
    rows = np.repeat(emb[:1][None], 5, axis=1)
    g = ground_sets(tiny_catalog.index, rows, k=5, m=3)
    assert len(set(g.items[0].tolist())) == 5 and g.items[0, 0] == 0
    nearest = tiny_catalog.index.search(emb[:1], 5)[1][0]
    assert sorted(g.items[0].tolist()) == sorted(nearest.tolist())
    assert g.neighbours.shape[:2] == (1, 5) and g.neighbours.shape[2] >= 5  # at least max(K, m) deep
    # Distinct exact rows ground to themselves.
    pick = np.array([[3, 11, 20, 30]])
    g = ground_sets(tiny_catalog.index, emb[pick], k=4)
    assert sorted(g.items[0].tolist()) == sorted(pick[0].tolist())
    assert g.scores.min() == pytest.approx(1.0, abs=1e-5)


def test_text_key_is_what_a_person_reads_as_the_same_text():
    assert {text_key(t) for t in ["Home Decor", "  home   DECOR. ", "Home Decor!", "«Home Decor»"]} == {"home decor"}
    assert text_key("hair, casual beach") != text_key("hair casual beach")  # inner punctuation is kept
    assert text_key("...") == ""
    assert text_groups(["b", "A.", "a", " B "]).tolist() == [0, 1, 1, 0]


def test_one_item_per_text_the_most_similar_one():
    # Items 7 and 3 share a text: row 1 takes 7 (0.9), so row 0's 3 is skipped and it gets its next item, 5.
    groups = np.array([0, 1, 2, 4, 5, 5, 6, 4, 8, 9])
    rows = np.array([[7, 3, 5], [7, 9, 3]])
    scores = np.array([[0.8, 0.7, 0.1], [0.9, 0.2, 0.1]], np.float32)
    items, s, source = assign_distinct(scores, rows, 2, groups)
    assert items.tolist() == [7, 5] and source.tolist() == [1, 0] and s.tolist() == pytest.approx([0.9, 0.1])
    items, _, source = assign_distinct(scores, rows, 3, groups)  # quota 2 per row: row 0 falls back to item 5
    assert items.tolist() == [7, 9, 5] and source.tolist() == [1, 1, 0]


def _keys(catalog, rows) -> list[str]:
    return [text_key(catalog.texts[r]) for r in rows]


def test_ground_sets_searches_deeper_past_duplicate_texts(dup_catalog):
    # Five rows on "Home Decor": its 6 variants fill the first 4 and the next 8 nearest: the lists must deepen.
    rows = np.repeat(dup_catalog.emb[:1][None], 5, axis=1)
    g = ground_sets(dup_catalog.index, rows, k=4, m=1)
    assert g.items.shape == (1, 4) and len(set(_keys(dup_catalog, g.items[0]))) == 4
    assert _keys(dup_catalog, g.items[0])[0] == "home decor" and g.neighbours.shape[2] > 8
    depth = g.neighbours.shape[2]  # the lists themselves are plain nearest neighbours by id (WSCR's top m)
    np.testing.assert_array_equal(g.neighbours[0, 0], dup_catalog.index.search(dup_catalog.emb[:1], depth)[1][0])


def test_too_few_distinct_texts_is_a_clear_error():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(4, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    index = ItemIndex.build(emb, ["a", "b", "c", "d"], "Flat")
    with pytest.raises(DataError, match="attach_texts"):
        item_groups(index)
    attach_texts(index, ["Lamp", "lamp.", "LAMP", "rug"])
    assert len(set(ground_sets(index, emb[None, :2], k=2).items[0].tolist()) & {0, 1, 2}) == 1
    with pytest.raises(DataError, match="only 2 distinct item texts"):
        ground_sets(index, emb[None, :2], k=3)
    with pytest.raises(DataError, match="3 item texts for an index of 4"):
        attach_texts(index, ["a", "b", "c"])


def test_prepared_catalog_and_the_served_index_ground_by_text(tmp_path, encoder, dup_catalog):
    import pyarrow as pa

    from r4t.catalog import load_catalog, prepare_catalog
    from r4t.config import DatasetSpec, IndexConfig
    from r4t.data.dataset import Dataset
    from r4t.data.schema import CATALOG_SCHEMA, QUERIES_SCHEMA, SETS_SCHEMA
    from r4t.serve.stages import Ground

    items = [{"item_id": i, "text": t, "category": c}
             for i, t, c in zip(dup_catalog.ids, dup_catalog.texts, dup_catalog.categories)]
    queries = [{"query_id": "o0", "text": "cozy cabin weekend", "split": "train", "task": "oar", "set_id": None}]
    source = Dataset("dup", pa.Table.from_pylist(items, schema=CATALOG_SCHEMA), SETS_SCHEMA.empty_table(),
                     pa.Table.from_pylist(queries, schema=QUERIES_SCHEMA)).save(tmp_path / "source")
    cat = prepare_catalog(DatasetSpec("dup", "r4t", str(source)), tmp_path / "run", encoder, IndexConfig(),
                          progress=False)
    np.testing.assert_array_equal(cat.index.dup_group, dup_catalog.index.dup_group)
    served = Ground(load_catalog(tmp_path / "run" / "dup"), tmp_path / "run" / "dup")  # the served stage, no Ray
    q = encoder.encode(["cozy cabin weekend"])
    out = served([q], q, [4])[0]["items"]
    assert len(out) == 4 and len({text_key(i["text"]) for i in out}) == 4
