"""RewardScorer end to end with the real MiniLM encoder over the tiny catalog (tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from r4t.config import RewardConfig
from r4t.errors import ConfigError, DataError, ManifestMismatch
from r4t.index import ItemIndex
from r4t.rewards import vendi_score
from r4t.rewards.scorer import TERMS, RewardScorer

# Ten sub-queries that are exactly catalog item texts, two per category.
DISTINCT = [
    "red leather ankle boots", "white canvas low-top sneakers",
    "black leather tote bag", "beaded evening clutch",
    "floral print maxi dress", "green satin evening gown",
    "wide brim straw sun hat", "grey knitted beanie",
    "gold hoop earrings", "diamond tennis bracelet",
]
# Ten paraphrases of one item.
PARAPHRASES = [
    "red leather ankle boots", "ankle boots in red leather", "red leather booties",
    "crimson leather ankle boots", "red ankle-length leather boots", "short red leather boots",
    "red boots made of leather, ankle height", "leather ankle boots, red", "women's red leather ankle boots",
    "red leather ankle booties",
]
# Ten sub-queries that all stay within footwear (their union of top-5 results leaves most of the catalog out).
SHOES_ONLY = [
    "red leather ankle boots", "white canvas low-top sneakers", "black suede penny loafers",
    "nude patent stiletto pumps", "brown leather hiking boots", "silver strappy high-heel sandals",
    "navy mesh running shoes", "tan espadrille wedges", "chunky winter boots", "ballet flats",
]
QUERY = "a complete outfit for a summer wedding"
PER_SET = ("ground", "div", "div_raw", "align", "composite")


def fanout(lines, numbered=False):
    return "\n".join(f"{i + 1}. {s}" if numbered else s for i, s in enumerate(lines))


@pytest.fixture(scope="module")
def scorer(encoder, tiny_catalog):
    return RewardScorer(encoder, tiny_catalog.index, tiny_catalog.emb)


def retrieved_ids(encoder, cat, subqueries, m=5):
    _, rows = cat.index.search(encoder.encode(subqueries), m)
    return {cat.ids[r] for r in rows.ravel() if r >= 0}


def test_result_shape_and_keys(scorer):
    out = scorer.score([QUERY, QUERY], [fanout(DISTINCT), fanout(PARAPHRASES)])
    for name in TERMS:
        assert out[name].shape == (2,)
    assert out["malformed"].dtype == bool and not out["malformed"].any()
    assert list(out["error"]) == ["", ""]
    assert np.isnan(out["recall"]).all() and np.isnan(out["hit"]).all()  # no reference sets given


def test_catalog_texts_are_fully_grounded(scorer, encoder, tiny_catalog):
    # Each sub-query is a catalog item verbatim; its embedding equals the item's up to float32 noise from
    # batch padding (~1e-7), so the distance is ~1e-6 and ground within 1e-5 of 1. Going through
    # sqrt(2 - 2 cos) of a float32 inner product instead would lose ~5e-4.
    item = tiny_catalog.emb[[tiny_catalog.row(t) for t in DISTINCT]]
    assert np.abs(encoder.encode(DISTINCT) - item).max() < 1e-6
    out = scorer.score([QUERY], [fanout(DISTINCT, numbered=True)])
    assert not out["malformed"][0], out["error"][0]
    assert out["ground"][0] == pytest.approx(1.0, abs=1e-5)


def test_catalog_texts_as_subqueries(scorer, encoder, tiny_catalog):
    cat = tiny_catalog
    out = scorer.score([QUERY], [fanout(DISTINCT, numbered=True)])
    assert not out["malformed"][0], out["error"][0]
    assert 0.999 < out["ground"][0] <= 1.0  # see test_catalog_texts_are_fully_grounded for the exact value
    # The nearest item of each sub-query is itself.
    _, top1 = cat.index.search(encoder.encode(DISTINCT), 1)
    assert top1.ravel().tolist() == [cat.row(t) for t in DISTINCT]

    rows = [cat.row(t) for t in DISTINCT]
    div_raw = float(vendi_score(cat.emb[rows]))
    assert out["div_raw"][0] == pytest.approx(div_raw, rel=1e-6)
    assert out["div"][0] == pytest.approx((div_raw - 1.0) / 9.0, rel=1e-6, abs=1e-9)

    q = encoder.encode([QUERY])[0].astype(np.float64)
    s = encoder.encode(DISTINCT).astype(np.float64)
    assert out["align"][0] == pytest.approx(float(np.mean(s @ q)), abs=1e-5)

    expect = 0.6 * out["ground"][0] + 0.2 * out["div"][0] + 0.2 * out["align"][0]
    assert out["composite"][0] == pytest.approx(expect, abs=1e-12)
    assert out["reward"][0] == out["composite"][0]  # no reference set: reward is the composite


def test_paraphrases_are_less_diverse(scorer):
    out = scorer.score([QUERY, QUERY], [fanout(PARAPHRASES), fanout(DISTINCT)])
    assert not out["malformed"].any(), out["error"]
    assert out["div_raw"][0] < out["div_raw"][1]
    assert out["div"][0] < out["div"][1]
    assert 0.0 <= out["div"][0] <= 1.0 and 0.0 <= out["div"][1] <= 1.0
    # The paraphrases also align with each other's meaning, not with the wedding query: compare with a query
    # about boots, which should align better than the wedding query.
    boots = scorer.score(["red leather ankle boots"], [fanout(PARAPHRASES)])
    assert boots["align"][0] > out["align"][0]


def test_wscr_reference_equals_retrieved(scorer, encoder, tiny_catalog):
    ref = sorted(retrieved_ids(encoder, tiny_catalog, SHOES_ONLY, scorer.config.wscr_m))
    out = scorer.score([QUERY], [fanout(SHOES_ONLY)], [ref])
    assert out["recall"][0] == pytest.approx(1.0)
    assert out["hit"][0] == 1.0
    assert out["reward"][0] == out["recall"][0]
    # The OAR terms are still reported alongside.
    assert np.isfinite(out["composite"][0]) and np.isfinite(out["ground"][0])


def test_wscr_partial_and_disjoint(scorer, encoder, tiny_catalog):
    cat = tiny_catalog
    got = retrieved_ids(encoder, cat, SHOES_ONLY, scorer.config.wscr_m)
    outside = [i for i in cat.ids if i not in got]
    assert len(outside) >= 3, "test setup: the shoe fan-out should leave part of the catalog unretrieved"
    inside = sorted(got)[:3]
    out = scorer.score([QUERY, QUERY], [fanout(SHOES_ONLY)] * 2, [outside[:3], inside + outside[:1]])
    assert out["recall"][0] == 0.0 and out["hit"][0] == 0.0 and out["reward"][0] == 0.0
    assert out["recall"][1] == pytest.approx(0.75) and out["hit"][1] == 1.0
    assert out["reward"][1] == pytest.approx(0.75)


def test_wscr_uses_m_items_per_subquery(encoder, tiny_catalog):
    # With wscr_m=1 only the top-1 item of each sub-query counts: an item retrieved at rank 2..5 is missed.
    cat = tiny_catalog
    sc = RewardScorer(encoder, cat.index, cat.emb, RewardConfig(wscr_m=1))
    top1 = retrieved_ids(encoder, cat, SHOES_ONLY, 1)
    top5 = retrieved_ids(encoder, cat, SHOES_ONLY, 5)
    extra = sorted(top5 - top1)
    assert extra, "test setup: ranks 2..5 should add items"
    out = sc.score([QUERY, QUERY], [fanout(SHOES_ONLY)] * 2, [sorted(top1), [extra[0]]])
    assert out["recall"][0] == pytest.approx(1.0)
    assert out["recall"][1] == 0.0


def test_soft_coverage_reward_when_configured(encoder, tiny_catalog):
    cat = tiny_catalog
    soft = RewardScorer(encoder, cat.index, cat.emb, RewardConfig(wscr_reward="soft_coverage"))
    exact = RewardScorer(encoder, cat.index, cat.emb)
    got = retrieved_ids(encoder, cat, SHOES_ONLY)
    outside = [i for i in cat.ids if i not in got][:3]
    args = ([QUERY] * 2, [fanout(SHOES_ONLY)] * 2, [sorted(got)[:3], outside])
    out, plain = soft.score(*args), exact.score(*args)
    np.testing.assert_array_equal(out["recall"], plain["recall"])  # recall stays the exact coverage
    np.testing.assert_array_equal(plain["reward"], [1.0, 0.0])
    assert out["reward"][0] == pytest.approx(1.0) and 0.0 < out["reward"][1] < 1.0  # signal where coverage is 0
    retrieved = cat.emb[cat.index.search(encoder.encode(SHOES_ONLY), 5)[1].ravel()]
    by_hand = (cat.emb[[cat.ids.index(i) for i in outside]] @ retrieved.T).max(axis=1).mean()
    assert out["reward"][1] == pytest.approx(by_hand, abs=1e-5)
    # The embedding path (RLlib's latent env, latent synthesis) gets the same reward.
    q, rows = encoder.encode([QUERY]), encoder.encode(SHOES_ONLY)[None]
    assert soft.score_embeddings(q, rows, [outside])["reward"][0] == pytest.approx(out["reward"][1], abs=1e-6)


def test_wscr_reward_must_be_known():
    with pytest.raises(ConfigError, match="reward.wscr_reward='soft'"):
        RewardConfig(wscr_reward="soft")


def test_mixed_reference_and_no_reference(scorer, encoder, tiny_catalog):
    ref = sorted(retrieved_ids(encoder, tiny_catalog, SHOES_ONLY))
    out = scorer.score([QUERY, QUERY], [fanout(SHOES_ONLY), fanout(DISTINCT)], [ref, None])
    assert out["reward"][0] == pytest.approx(1.0)
    assert np.isnan(out["recall"][1]) and np.isnan(out["hit"][1])
    assert out["reward"][1] == out["composite"][1]


@pytest.mark.parametrize("bad,why", [
    (fanout(DISTINCT[:9]), "expected 10 lines, got 9"),
    (fanout(DISTINCT[:9] + [DISTINCT[2].upper()]), "line 10 repeats line 3"),
    (fanout(DISTINCT[:4] + [""] + DISTINCT[5:]), "line 5 is empty"),
])
def test_malformed_gets_penalty(scorer, bad, why):
    out = scorer.score([QUERY], [bad], [["i0"]])
    assert out["malformed"][0]
    assert out["reward"][0] == scorer.config.malformed_penalty == -1.0
    for name in ("ground", "div", "div_raw", "align", "recall", "hit"):
        assert np.isnan(out[name][0]), name
    assert out["error"][0] == why


def test_malformed_does_not_disturb_the_batch(scorer, encoder, tiny_catalog):
    ref = sorted(retrieved_ids(encoder, tiny_catalog, SHOES_ONLY))[:4]
    nine = fanout(DISTINCT[:9])
    dup = fanout(PARAPHRASES[:9] + [PARAPHRASES[0]])
    mixed = scorer.score(["q one", "q two", "q three", "q four"],
                         [fanout(DISTINCT), nine, fanout(SHOES_ONLY), dup],
                         [None, ["i1"], ref, None])
    alone = scorer.score(["q one", "q three"], [fanout(DISTINCT), fanout(SHOES_ONLY)], [None, ref])
    np.testing.assert_array_equal(mixed["malformed"], [False, True, False, True])
    assert mixed["error"][0] == mixed["error"][2] == ""
    assert mixed["error"][1] and mixed["error"][3]
    np.testing.assert_array_equal(mixed["reward"][[1, 3]], [-1.0, -1.0])
    for name in TERMS:
        np.testing.assert_allclose(mixed[name][[0, 2]], alone[name], atol=1e-5, equal_nan=True, err_msg=name)
    assert mixed["recall"][2] == pytest.approx(1.0)


def test_all_malformed_batch(scorer):
    out = scorer.score([QUERY, QUERY], ["just one line", fanout(DISTINCT[:11] + ["x"])])
    assert out["malformed"].all()
    np.testing.assert_array_equal(out["reward"], [-1.0, -1.0])
    assert np.isnan(out["ground"]).all()


def test_custom_penalty(encoder, tiny_catalog):
    sc = RewardScorer(encoder, tiny_catalog.index, tiny_catalog.emb, RewardConfig(malformed_penalty=-2.5))
    out = sc.score([QUERY], ["only one line"])
    assert out["malformed"][0] and out["reward"][0] == -2.5


def test_unknown_reference_id(scorer):
    with pytest.raises(DataError, match="nope-123"):
        scorer.score([QUERY], [fanout(DISTINCT)], [["i0", "nope-123"]])


def test_length_mismatch(scorer):
    with pytest.raises(ValueError):
        scorer.score([QUERY, QUERY], [fanout(DISTINCT)])
    with pytest.raises(ValueError):
        scorer.score([QUERY], [fanout(DISTINCT)], [None, None])


def test_manifest_mismatch(encoder, tiny_catalog):
    cat = tiny_catalog
    index = ItemIndex.build(cat.emb, cat.ids, "Flat",
                            embed_manifest={**encoder.manifest, "weights_hash": "0" * 64, "catalog_hash": "test"})
    with pytest.raises(ManifestMismatch, match="weights_hash"):
        RewardScorer(encoder, index, cat.emb)
    no_encoder = ItemIndex.build(cat.emb, cat.ids, "Flat")  # no encoder fields at all
    with pytest.raises(ManifestMismatch, match="encoder"):
        RewardScorer(encoder, no_encoder, cat.emb)


def test_item_embeddings_must_match_index(encoder, tiny_catalog):
    cat = tiny_catalog
    with pytest.raises(DataError):
        RewardScorer(encoder, cat.index, cat.emb[:-1])


def test_custom_weights_are_applied(encoder, tiny_catalog):
    cfg = RewardConfig(w_ground=0.1, w_div=0.5, w_align=0.4)
    custom = RewardScorer(encoder, tiny_catalog.index, tiny_catalog.emb, cfg)
    default = RewardScorer(encoder, tiny_catalog.index, tiny_catalog.emb)
    fos = [fanout(DISTINCT), fanout(PARAPHRASES)]
    a, b = custom.score([QUERY, QUERY], fos), default.score([QUERY, QUERY], fos)
    for name in ("ground", "div", "div_raw", "align"):
        np.testing.assert_allclose(a[name], b[name], atol=1e-6)
    np.testing.assert_allclose(a["composite"], 0.1 * a["ground"] + 0.5 * a["div"] + 0.4 * a["align"], atol=1e-12)
    np.testing.assert_allclose(b["composite"], 0.6 * b["ground"] + 0.2 * b["div"] + 0.2 * b["align"], atol=1e-12)
    np.testing.assert_allclose(a["reward"], a["composite"])
    assert not np.allclose(a["composite"], b["composite"])


def test_custom_k(encoder, tiny_catalog):
    sc = RewardScorer(encoder, tiny_catalog.index, tiny_catalog.emb, RewardConfig(k=3))
    out = sc.score([QUERY, QUERY], [fanout(DISTINCT[:3]), fanout(DISTINCT)])
    np.testing.assert_array_equal(out["malformed"], [False, True])
    rows = [tiny_catalog.row(t) for t in DISTINCT[:3]]
    assert out["div_raw"][0] == pytest.approx(float(vendi_score(tiny_catalog.emb[rows])), rel=1e-6)
    assert out["div"][0] == pytest.approx((out["div_raw"][0] - 1) / 2, rel=1e-9)
