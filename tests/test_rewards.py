"""Pure reward terms: Vendi, groundedness, alignment, diversity, WSCR coverage, composite, fan-out parsing and
the returned-set metrics, each checked against a brute-force reference or numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from r4t.config import RewardConfig
from r4t.rewards import (alignment, composite, diversity, groundedness, normalized_vendi, parse_fanout,
                         soft_coverage, vendi_score, wscr_coverage)
from r4t.rewards.set_metrics import category_share, returned_set_metrics

SQ2 = math.sqrt(2.0)


def brute_vendi(X: np.ndarray) -> float:
    """Textbook Vendi: eigenvalues of the n×n cosine kernel / n, float64, Shannon entropy, exp."""
    X = np.asarray(X, np.float64)
    n = X.shape[0]
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    K = Xn @ Xn.T
    lam = np.linalg.eigvalsh(K / n)
    lam = lam[lam > 1e-12]
    return float(np.exp(-np.sum(lam * np.log(lam))))


def _random(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


# ----------------------------------------------------------------------------------------------- Vendi


@pytest.mark.parametrize("n,d", [(3, 8), (7, 7), (12, 4), (10, 384), (50, 3), (2, 2)])
def test_vendi_matches_brute_force(n, d):
    for seed in range(3):
        X = _random(n, d, seed)
        got = vendi_score(X)
        assert np.ndim(got) == 0
        assert float(got) == pytest.approx(brute_vendi(X), rel=1e-9, abs=1e-9)
        assert 1.0 - 1e-9 <= float(got) <= min(n, d) + 1e-9


@pytest.mark.parametrize("n,d", [(3, 8), (6, 6), (9, 4)])
def test_vendi_batched_equals_per_item(n, d):
    X = np.random.default_rng(42).standard_normal((5, n, d))
    batched = vendi_score(X)
    assert batched.shape == (5,)
    np.testing.assert_allclose(batched, [vendi_score(x) for x in X], rtol=1e-12)
    np.testing.assert_allclose(batched, [brute_vendi(x) for x in X], rtol=1e-9)
    # Two batch dimensions work the same way.
    np.testing.assert_allclose(vendi_score(X.reshape(5, 1, n, d))[:, 0], batched, rtol=1e-12)


@pytest.mark.parametrize("n,d", [(5, 16), (5, 3), (4, 4)])
def test_vendi_identical_vectors_is_one(n, d):
    v = _random(1, d, 7)
    assert float(vendi_score(np.repeat(v, n, axis=0))) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("n,d", [(4, 4), (3, 10), (6, 32)])
def test_vendi_orthogonal_vectors_is_n(n, d):
    q, _ = np.linalg.qr(_random(d, d, 3))
    X = q[:n] * np.arange(1, n + 1)[:, None]  # orthogonal rows, various lengths
    assert float(vendi_score(X)) == pytest.approx(n, rel=1e-9)
    assert float(vendi_score(np.eye(n, d))) == pytest.approx(n, rel=1e-12)


def test_vendi_two_vectors_closed_form():
    # Cosine c between two vectors: eigenvalues of K/2 are (1 ± c)/2.
    c = 0.3
    X = np.array([[1.0, 0.0], [c, math.sqrt(1 - c * c)]])
    p = np.array([(1 + c) / 2, (1 - c) / 2])
    assert float(vendi_score(X)) == pytest.approx(math.exp(-np.sum(p * np.log(p))), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 12), d=st.integers(2, 12), seed=st.integers(0, 2**31 - 1))
def test_vendi_permutation_invariant(n, d, seed):
    X = _random(n, d, seed)
    perm = np.random.default_rng(seed + 1).permutation(n)
    assert float(vendi_score(X[perm])) == pytest.approx(float(vendi_score(X)), rel=1e-9)
    assert float(vendi_score(X)) == pytest.approx(brute_vendi(X), rel=1e-8)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 12), d=st.integers(2, 12), seed=st.integers(0, 2**31 - 1),
       log_scale=st.floats(-6, 6))
def test_vendi_row_scale_invariant(n, d, seed, log_scale):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    scale = np.exp(log_scale + rng.uniform(-2, 2, size=(n, 1)))
    sign = rng.choice([-1.0, 1.0], size=(n, 1))  # the sign of a row flips rows/cols of K: same spectrum
    assert float(vendi_score(X * scale)) == pytest.approx(float(vendi_score(X)), rel=1e-8)
    assert float(vendi_score(X * scale * sign)) == pytest.approx(float(vendi_score(X)), rel=1e-8)


@settings(max_examples=30, deadline=None)
@given(B=st.integers(1, 4), n=st.integers(2, 9), d=st.integers(2, 9), seed=st.integers(0, 2**31 - 1))
def test_vendi_batched_property(B, n, d, seed):
    X = np.random.default_rng(seed).standard_normal((B, n, d))
    np.testing.assert_allclose(vendi_score(X), [brute_vendi(x) for x in X], rtol=1e-8)


def test_vendi_zero_vector_raises():
    X = np.eye(3)
    X[1] = 0.0
    with pytest.raises(ValueError, match="zero vector"):
        vendi_score(X)
    batch = np.stack([np.eye(3), X])
    with pytest.raises(ValueError):
        vendi_score(batch)


def test_vendi_accepts_float32_and_returns_float64():
    X = _random(6, 5, 1).astype(np.float32)
    got = vendi_score(X)
    assert np.asarray(got).dtype == np.float64
    assert float(got) == pytest.approx(brute_vendi(X.astype(np.float64)), rel=1e-9)


def test_normalized_vendi_endpoints():
    n = 6
    same = vendi_score(np.ones((n, 4)))
    ortho = vendi_score(np.eye(n))
    assert float(normalized_vendi(same, n)) == pytest.approx(0.0, abs=1e-9)
    assert float(normalized_vendi(ortho, n)) == pytest.approx(1.0, abs=1e-9)
    assert float(normalized_vendi(3.5, 6)) == pytest.approx(0.5)
    np.testing.assert_allclose(normalized_vendi(np.array([1.0, 6.0]), 6), [0.0, 1.0])
    assert float(normalized_vendi(1.0, 1)) == 0.0  # a single item: no division by zero


# ------------------------------------------------------------------------------------------ groundedness


def _at_cosines(cosines: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Rows [1, k, 2] at the given cosines to their nearest items, all (1, 0)."""
    c = np.asarray(cosines, float)
    rows = np.stack([c, np.sqrt(1.0 - c**2)], axis=-1)[None]
    return rows, np.broadcast_to(np.array([1.0, 0.0]), rows.shape)


def test_groundedness_hand_cases():
    np.testing.assert_allclose(groundedness(*_at_cosines([1.0] * 5)), [1.0], atol=1e-12)
    np.testing.assert_allclose(groundedness(*_at_cosines([0.0] * 4)), [1.0 - SQ2], atol=1e-12)
    np.testing.assert_allclose(groundedness(*_at_cosines([-1.0] * 3)), [-1.0], atol=1e-12)  # antipodal: distance 2
    # Mixed: cos 1, 0, 0.5, -1 → distances 0, √2, 1, 2 → mean (3 + √2) / 4.
    np.testing.assert_allclose(groundedness(*_at_cosines([1.0, 0.0, 0.5, -1.0])), [1.0 - (3.0 + SQ2) / 4.0],
                               atol=1e-12)
    # Batched: each set is scored on its own.
    a, b = _at_cosines([1.0, 1.0]), _at_cosines([0.5, 0.5])
    np.testing.assert_allclose(groundedness(np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]])),
                               [1.0, 0.0], atol=1e-12)


def test_groundedness_is_exact_for_identical_float32_vectors():
    # Identical float32 unit vectors are at distance 0 exactly, whatever their float32 inner product rounds to.
    v = np.random.default_rng(1).standard_normal((1, 10, 384)).astype(np.float32)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    np.testing.assert_array_equal(groundedness(v, v.copy()), [1.0])


def test_groundedness_matches_euclidean_definition():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((3, 4, 8))
    c = rng.standard_normal((3, 4, 8))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    c /= np.linalg.norm(c, axis=-1, keepdims=True)
    expect = 1.0 - np.linalg.norm(q - c, axis=-1).mean(axis=-1)
    np.testing.assert_allclose(groundedness(q, c), expect, atol=1e-12)


# --------------------------------------------------------------------------------------------- alignment


def test_alignment_hand_cases():
    e1, e2 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    diag = np.array([1.0, 1.0]) / SQ2
    rows = np.array([[e1, e2], [e1, diag], [-e1, -e1]])
    query = np.array([e1, e1, e1])
    got = alignment(rows, query)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, [0.5, (1.0 + 1.0 / SQ2) / 2.0, -1.0], atol=1e-12)


def test_alignment_uses_each_sets_own_query():
    e1, e2 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    rows = np.array([[e1, e1], [e1, e1]])
    np.testing.assert_allclose(alignment(rows, np.array([e1, e2])), [1.0, 0.0], atol=1e-12)


# --------------------------------------------------------------------------------------------- diversity


def test_diversity_returns_raw_and_normalized():
    rng = np.random.default_rng(5)
    items = rng.standard_normal((4, 10, 16))
    raw, norm = diversity(items)
    assert raw.shape == norm.shape == (4,)
    np.testing.assert_allclose(raw, vendi_score(items), rtol=1e-12)
    np.testing.assert_allclose(norm, (raw - 1.0) / 9.0, rtol=1e-12)
    assert np.all((norm >= -1e-12) & (norm <= 1 + 1e-12))


def test_diversity_extremes():
    k = 5
    items = np.stack([np.eye(k, 8), np.tile(np.eye(1, 8), (k, 1))])
    raw, norm = diversity(items)
    np.testing.assert_allclose(raw, [k, 1.0], atol=1e-9)
    np.testing.assert_allclose(norm, [1.0, 0.0], atol=1e-9)


# ------------------------------------------------------------------------------------------ WSCR coverage


def test_wscr_partial_overlap():
    retrieved = [np.array([[0, 1, 2], [2, 3, 4]])]
    recall, hit = wscr_coverage(retrieved, [{1, 4, 7, 9}])
    np.testing.assert_allclose(recall, [0.5])
    np.testing.assert_allclose(hit, [1.0])


def test_wscr_no_overlap_and_full():
    retrieved = [np.array([[0, 1], [2, 3]]), np.array([[5, 6], [7, 8]])]
    recall, hit = wscr_coverage(retrieved, [{10, 11}, {5, 8}])
    np.testing.assert_allclose(recall, [0.0, 1.0])
    np.testing.assert_allclose(hit, [0.0, 1.0])


def test_wscr_duplicates_counted_once_and_padding_ignored():
    # The same item retrieved by several sub-queries counts once; -1 (no result) never counts.
    retrieved = [np.array([[3, 3, -1], [3, -1, -1]]), np.array([[-1, -1], [-1, -1]]), np.array([2, -1, 5])]
    recall, hit = wscr_coverage(retrieved, [{3, 4}, {0}, {2, 5, 6, 7}])
    np.testing.assert_allclose(recall, [0.5, 0.0, 0.5])
    np.testing.assert_allclose(hit, [1.0, 0.0, 1.0])


def test_wscr_empty_reference_raises():
    with pytest.raises(ValueError, match="empty"):
        wscr_coverage([np.array([[0, 1]]), np.array([[2, 3]])], [{0}, set()])


# Items: e1, e2, e3 and u = (e1 + e2) / sqrt 2 (rows 0..3).
SOFT_ITEMS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1 / SQ2, 1 / SQ2, 0]])


def test_soft_coverage_is_one_when_the_reference_is_retrieved():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(20, 8))
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    retrieved = np.array([[3, 7, 1, 12, -1], [5, 5, 6, 0, 2]])
    reference = np.array([[7, 12, -1], [0, 5, 6]])
    np.testing.assert_allclose(soft_coverage(retrieved, reference, items), [1.0, 1.0])


def test_soft_coverage_by_hand_between_the_coverage_bounds():
    # Y = {e1, e2}, R = {e1, u}: e1 is covered (cos 1), e2 only by u (cos 1/sqrt 2).
    soft = soft_coverage(np.array([[0, 3]]), np.array([[0, 1]]), SOFT_ITEMS)
    recall, _ = wscr_coverage([np.array([0, 3])], [{0, 1}])
    np.testing.assert_allclose(soft, [(1 + 1 / SQ2) / 2])
    assert recall[0] == 0.5 < soft[0] < 1.0


def test_soft_coverage_is_higher_for_a_retrieved_set_nearer_the_reference():
    # Neither set retrieves e1 or e2 (coverage 0 for both); u lies between them, e3 is orthogonal to both.
    near_far = soft_coverage(np.array([[3, -1], [2, -1]]), np.array([[0, 1], [0, 1]]), SOFT_ITEMS)
    np.testing.assert_allclose(near_far, [1 / SQ2, 0.0], atol=1e-12)
    assert wscr_coverage([np.array([3]), np.array([2])], [{0, 1}, {0, 1}])[0].tolist() == [0.0, 0.0]


def test_soft_coverage_empty_sets_raise():
    with pytest.raises(ValueError, match="empty"):
        soft_coverage(np.array([[0, 1]]), np.array([[-1, -1]]), SOFT_ITEMS)
    with pytest.raises(ValueError, match="empty"):
        soft_coverage(np.array([[-1]]), np.array([[0]]), SOFT_ITEMS)


# --------------------------------------------------------------------------------------------- composite


def test_composite_default_weights():
    got = composite(np.array([0.5, 1.0]), np.array([0.25, 0.0]), np.array([0.75, -1.0]))
    np.testing.assert_allclose(got, [0.6 * 0.5 + 0.2 * 0.25 + 0.2 * 0.75, 0.6 - 0.2], atol=1e-12)
    cfg = RewardConfig()
    assert (cfg.w_ground, cfg.w_div, cfg.w_align) == (0.6, 0.2, 0.2)


def test_composite_custom_weights():
    got = composite(np.array([0.5]), np.array([0.25]), np.array([0.75]), w_ground=0.1, w_div=0.5, w_align=0.4)
    np.testing.assert_allclose(got, [0.05 + 0.125 + 0.3], atol=1e-12)
    only_div = composite(np.array([0.9]), np.array([0.3]), np.array([0.7]), 0.0, 1.0, 0.0)
    np.testing.assert_allclose(only_div, [0.3], atol=1e-12)


# --------------------------------------------------------------------------------------------- parsing


def test_parse_exact_k_lines():
    p = parse_fanout("red boots\nblack tote bag\ngold earrings", 3)
    assert p.ok and p.error is None
    assert p.subqueries == ("red boots", "black tote bag", "gold earrings")


def test_parse_surrounding_whitespace_and_crlf():
    p = parse_fanout("\n  red boots  \r\nblack tote bag\r\n\tgold earrings\n\n", 3)
    assert p.ok, p.error
    assert p.subqueries == ("red boots", "black tote bag", "gold earrings")


def test_parse_strips_list_markers():
    text = "1. foo shoes\n- bar bags\n2) baz hats\n* qux rings\n• quux scarves\n10. last one"
    p = parse_fanout(text, 6)
    assert p.ok, p.error
    assert p.subqueries == ("foo shoes", "bar bags", "baz hats", "qux rings", "quux scarves", "last one")


def test_parse_keeps_numbers_that_are_not_markers():
    p = parse_fanout("1.5 inch block heels\n3 pack cotton socks\n2020s retro sneakers", 3)
    assert p.ok, p.error
    assert p.subqueries == ("1.5 inch block heels", "3 pack cotton socks", "2020s retro sneakers")


@pytest.mark.parametrize("text,n", [("a\nb", 2), ("a\nb\nc\nd", 4), ("", 1)])
def test_parse_wrong_count(text, n):
    p = parse_fanout(text, 3)
    assert not p.ok
    assert p.error == f"expected 3 lines, got {n}"


def test_parse_nine_of_ten_lines():
    p = parse_fanout("\n".join(f"query {i}" for i in range(9)), 10)
    assert not p.ok and "expected 10" in p.error and "got 9" in p.error


def test_parse_empty_line_in_middle():
    p = parse_fanout("red boots\n   \ngold earrings", 3)
    assert not p.ok
    assert p.error == "line 2 is empty"


def test_parse_marker_only_line_is_empty():
    # "2." with nothing after it is an empty sub-query once the list marker is removed, not the query "2.".
    for text in ("1. red boots\n2.\n3. gold earrings", "- red boots\n- \n- gold earrings",
                 "1) red boots\n2)\n3) gold earrings"):
        p = parse_fanout(text, 3)
        assert not p.ok, f"{text!r} parsed as {p.subqueries}"
        assert "line 2" in p.error


def test_parse_duplicates_case_and_whitespace_insensitive():
    p = parse_fanout("Red  Boots\nblack tote\n  red boots ", 3)
    assert not p.ok
    assert p.error == "line 3 repeats line 1"
    # Duplicates hiding behind different list markers are still duplicates.
    p = parse_fanout("1. gold hoops\n2. silver cuff\n3. GOLD\tHOOPS", 3)
    assert not p.ok and p.error == "line 3 repeats line 1"
    # Near-duplicates are fine.
    assert parse_fanout("gold hoops\ngold hoop\nsilver cuff", 3).ok


def test_parse_list_input():
    p = parse_fanout(["1. red boots", "  black tote ", "- gold earrings"], 3)
    assert p.ok, p.error
    assert p.subqueries == ("red boots", "black tote", "gold earrings")
    assert parse_fanout(["a", "", "c"], 3).error == "line 2 is empty"
    assert parse_fanout(["a", "b", "A"], 3).error == "line 3 repeats line 1"
    assert parse_fanout(["a", "b"], 3).error == "expected 3 lines, got 2"


def test_parse_never_raises_on_junk():
    for junk in ("", "\n\n\n", "•\n*\n-", "1.\n2.\n3.", "\x00\n\x00\n\x00"):
        p = parse_fanout(junk, 3)
        assert isinstance(p.ok, bool)


# ------------------------------------------------------------------------------------------ set metrics


def test_category_share_hand_case():
    codes = np.array([0, 1, 1, 2])
    rows = np.array([[0, 1, 2], [0, 3, 1], [2, 2, 1]])
    np.testing.assert_allclose(category_share(rows, codes), [2 / 3, 1.0, 1 / 3])


def test_returned_set_metrics_hand_case():
    s = 1.0 / SQ2
    item_emb = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [s, s]], np.float32)
    codes = np.array([0, 1, 0, 2])
    query = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], np.float32)
    rows = np.array([[0, 1], [0, 3], [0, 2]])
    ground = np.array([0.9, 0.8, 0.7])
    cfg = RewardConfig()
    retrieved = [np.array([[0, 1], [2, -1]]), np.array([[0, 3]]), np.array([[0, 2]])]
    reference = [{1, 5}, None, set()]
    m = returned_set_metrics(query, rows, item_emb, codes, ground, cfg, retrieved, reference)

    # Set 0: orthogonal pair. Set 1: cos 45° pair, eigenvalues (1 ± s)/2. Set 2: antipodal pair → one direction.
    p = np.array([(1 + s) / 2, (1 - s) / 2])
    vs1 = math.exp(-np.sum(p * np.log(p)))
    np.testing.assert_allclose(m["div_raw"], [2.0, vs1, 1.0], atol=1e-6)
    np.testing.assert_allclose(m["div"], [1.0, vs1 - 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(m["align"], [0.5, (1 + s) / 2, 0.0], atol=1e-6)
    np.testing.assert_allclose(m["ground"], ground)
    expect_comp = 0.6 * ground + 0.2 * np.array([1.0, vs1 - 1.0, 0.0]) + 0.2 * np.array([0.5, (1 + s) / 2, 0.0])
    np.testing.assert_allclose(m["composite"], expect_comp, atol=1e-6)
    np.testing.assert_allclose(m["category_share"], [1.0, 1.0, 0.5])
    # WSCR only where a non-empty reference set exists.
    assert m["recall"][0] == pytest.approx(0.5) and m["hit"][0] == 1.0
    assert np.isnan(m["recall"][1:]).all() and np.isnan(m["hit"][1:]).all()


def test_returned_set_metrics_custom_weights_and_no_reference():
    item_emb = np.eye(3, dtype=np.float32)
    m = returned_set_metrics(np.array([[1.0, 0.0, 0.0]], np.float32), np.array([[0, 1, 2]]), item_emb,
                             np.array([0, 0, 0]), np.array([0.5]), RewardConfig(w_ground=1.0, w_div=2.0, w_align=3.0))
    np.testing.assert_allclose(m["div"], [1.0], atol=1e-9)
    np.testing.assert_allclose(m["align"], [1 / 3], atol=1e-7)
    np.testing.assert_allclose(m["composite"], [0.5 + 2.0 + 1.0], atol=1e-6)
    np.testing.assert_allclose(m["category_share"], [1 / 3])
    assert np.isnan(m["recall"]).all() and np.isnan(m["hit"]).all()
