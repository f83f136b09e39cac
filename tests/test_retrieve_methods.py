"""Fan-out methods behind one interface: each returns K grounded items with distinct texts per query."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TINY_K
from r4t.config import RewardConfig, SamplerConfig
from r4t.diffusion.denoiser import DenoiserConfig, EDMDenoiser
from r4t.eval.compare import teacher_overlap
from r4t.policy.prompt import PLAIN_TEMPLATE
from r4t.grounding import item_groups, text_key
from r4t.retrieve.methods import (MMR, CategoryDiverse, DiffusionFanout, LMFanout, NoFanout, RLlibPolicyFanout,
                                  wscr_retrievals)
from r4t.rewards.parse import usable_subqueries

QUERIES = ["beach vacation outfit", "winter office look", "night out accessories"]


def test_usable_subqueries_keeps_distinct_nonempty_lines():
    text = "1. red boots\n2. red boots\n\n- black tote bag\n3) RED BOOTS\n4. straw hat\n5. scarf"
    assert usable_subqueries(text, 3) == ["red boots", "black tote bag", "straw hat"]
    assert usable_subqueries("\n \n", 3) == []


def _check(result, n_queries: int, k: int, item_emb: np.ndarray, ordered: bool = True) -> None:
    assert result.items.shape == result.scores.shape == (n_queries, k)
    assert all(len(set(row.tolist())) == k for row in result.items)
    assert len(result.retrieved) == len(result.generated) == n_queries and np.all(result.ground <= 1.0 + 1e-6)
    assert not ordered or np.all(np.diff(result.scores, axis=1) <= 1e-6)  # most confident first
    for b in range(n_queries):  # each score is the cosine of the item to one of the generated rows
        unit = result.generated[b] / np.linalg.norm(result.generated[b], axis=-1, keepdims=True)
        cos = unit @ item_emb[result.items[b]].T  # [n, K]
        assert np.all(np.isclose(cos, result.scores[b][None, :], atol=1e-4).any(axis=0))


def test_no_fanout_is_the_nearest_items(tiny_catalog, encoder):
    q = encoder.encode(QUERIES)
    res = NoFanout(tiny_catalog.index, tiny_catalog.emb).retrieve(QUERIES, q, 4, 2)
    _check(res, 3, 4, tiny_catalog.emb)
    np.testing.assert_array_equal(res.items, tiny_catalog.index.search(q, 4)[1])
    # WSCR: the m*K nearest, the same retrieval budget as a fan-out of K rows with m items each
    np.testing.assert_array_equal(res.retrieved[0], tiny_catalog.index.search(q, 8)[1][0])


def test_lm_fanout_grounds_its_subqueries(tiny_catalog, encoder, tiny_policy):
    method = LMFanout("R4T-FOLM", str(tiny_policy), encoder, tiny_catalog.index, tiny_catalog.emb,
                      PLAIN_TEMPLATE, TINY_K, max_new_tokens=48, seed=1)
    res = method.retrieve(QUERIES, encoder.encode(QUERIES), 5, 2)
    _check(res, 3, 5, tiny_catalog.emb)
    assert all(1 <= len(s) <= TINY_K for s in res.subqueries)
    # A completion with no usable line falls back to the query itself.
    method.backend.generate = lambda prompts, settings: [type("R", (), {"text": "", "prompt_index": i})()
                                                         for i in range(len(prompts))]
    res = method.retrieve(QUERIES[:1], encoder.encode(QUERIES[:1]), 5, 2)
    assert res.subqueries == [QUERIES[:1]]
    np.testing.assert_array_equal(np.sort(res.items[0]),
                                  np.sort(tiny_catalog.index.search(encoder.encode(QUERIES[:1]), 5)[1][0]))


def test_diffusion_fanout_is_deterministic_per_seed(tiny_catalog, encoder):
    torch.manual_seed(0)
    model = EDMDenoiser(DenoiserConfig(dim=tiny_catalog.emb.shape[1], rows=4, hidden=32, mlp=64, heads=2,
                                       layers=1), sigma_data=0.05).eval()
    sampler = SamplerConfig(method="heun", steps=4)
    q = encoder.encode(QUERIES)
    a = DiffusionFanout(model, sampler, tiny_catalog.index, tiny_catalog.emb, seed=3).retrieve(QUERIES, q, 4, 2)
    b = DiffusionFanout(model, sampler, tiny_catalog.index, tiny_catalog.emb, seed=3).retrieve(QUERIES, q, 4, 2)
    _check(a, 3, 4, tiny_catalog.emb)
    for r, g in zip(a.retrieved, a.generated):  # the union of the L=4 rows' m=2 nearest, within the K·m budget
        nearest = tiny_catalog.index.search((g / np.linalg.norm(g, axis=-1, keepdims=True)).astype(np.float32), 2)[1]
        assert len(r) == len(set(r.tolist())) <= 4 * 2 and set(r.tolist()) == set(nearest.ravel().tolist())
    np.testing.assert_array_equal(a.items, b.items)
    rows = DiffusionFanout(model, sampler, tiny_catalog.index, tiny_catalog.emb, seed=3).generate(q)
    assert rows.shape == (3, 4, q.shape[1])
    # Rows are returned as sampled, not renormalised: groundedness is measured on what the denoiser generated.
    np.testing.assert_array_equal(np.stack(a.generated), rows)
    assert not np.allclose(np.linalg.norm(rows, axis=-1), 1.0, atol=1e-3)


def test_wscr_retrievals_hold_every_method_to_k_times_m():
    neighbours = np.array([[5, 1, 9], [5, 2, 8], [3, 4, 7], [6, 0, 1]])  # 4 rows, their nearest first
    # Rank by rank across rows, distinct, cut at the budget: with more rows than K, no method retrieves more.
    np.testing.assert_array_equal(wscr_retrievals(neighbours, 2, 4), [5, 3, 6, 1])
    np.testing.assert_array_equal(wscr_retrievals(neighbours, 2, 100), [5, 3, 6, 1, 2, 4, 0])


def test_evaluate_method_scores_every_task(tiny_catalog, encoder):
    from r4t.config import RetrievalEvalConfig
    from r4t.eval.compare import evaluate_method, fanout_latency

    class Cat:  # the fields evaluate_method reads from a PreparedCatalog
        item_emb, category_codes, texts = tiny_catalog.emb, tiny_catalog.category_codes, tiny_catalog.texts

    q = encoder.encode(QUERIES)
    queries = {"oar": (QUERIES, q, None), "wscr": (QUERIES, q, [{0, 1}, {2}, {40, 41}])}
    method = NoFanout(tiny_catalog.index, tiny_catalog.emb)
    res = evaluate_method(method, Cat, queries, RetrievalEvalConfig(k=4), RewardConfig(k=4, wscr_m=2))
    assert 1 <= res["oar"]["div_raw"]["mean"] <= 4 and 0 <= res["wscr"]["recall"]["mean"] <= 1
    # Recall counts the whole m*K budget: a reference item ranked 8th of the 8 retrieved is found.
    eighth = int(tiny_catalog.index.search(q[:1], 8)[1][0, 7])
    only = {"wscr": (QUERIES[:1], q[:1], [{eighth}])}
    assert evaluate_method(method, Cat, only, RetrievalEvalConfig(k=4),
                           RewardConfig(k=4, wscr_m=2))["wscr"]["recall"]["mean"] == 1.0
    assert res["examples"]["oar"][0]["query"] == QUERIES[0] and len(res["examples"]["oar"][0]["items"]) == 4
    assert "wscr" not in res["examples"]  # titles with a reference set are scored by recall, not shown
    total, fan_out = fanout_latency(method, QUERIES, q, 5, 4, 2, repeats=2)
    assert total > 0 and fan_out is None  # no fan-out generates nothing


def test_fanout_latency_repeats_fast_methods_within_its_budget(monkeypatch):
    """A fast method runs until `seconds` are measured (at most MAX_REPEATS), a slow one `repeats` times; the
    warm-up is never timed; seconds=0 runs exactly `repeats` times."""
    from r4t.eval import compare

    class Clocked:  # each retrieve advances a fake clock by `cost` seconds
        def __init__(self, cost):
            self.cost, self.calls = cost, 0

        def retrieve(self, queries, query_emb, k, m):
            self.calls += 1
            clock[0] += self.cost

    clock = [0.0]
    monkeypatch.setattr(compare.time, "perf_counter", lambda: clock[0])
    emb = np.zeros((3, 4), np.float32)
    for cost, seconds, runs in ((0.3, 1.0, 4), (2.0, 1.0, 2), (0.001, 1.0, compare.MAX_REPEATS), (0.3, 0.0, 2)):
        method = Clocked(cost)  # 0.3 s a run: 4 runs reach 1 s
        assert compare.fanout_latency(method, ["a", "b", "c"], emb, 8, 4, 2, 2, seconds) == (pytest.approx(cost),
                                                                                               None)
        assert method.calls == 1 + runs


def test_fanout_latency_times_a_generating_methods_fan_out_within_the_same_runs(monkeypatch):
    """For a method that generates, the fan-out alone is timed inside the runs that time the whole retrieval."""
    from r4t.eval import compare
    from r4t.retrieve.methods import GeneratingMethod

    class Clocked(GeneratingMethod):
        def fan_out(self, queries, query_emb):
            clock[0] += 0.2
            return "rows"

        def ground(self, generated, query_emb, k, m):
            assert generated == "rows"
            clock[0] += 0.05

    clock = [0.0]
    monkeypatch.setattr(compare.time, "perf_counter", lambda: clock[0])
    total, fan_out = compare.fanout_latency(Clocked(), ["a"], np.zeros((1, 4), np.float32), 4, 4, 2, 3)
    assert (total, fan_out) == (pytest.approx(0.25), pytest.approx(0.2))


def test_best_of_n_keeps_the_best_composite_of_its_samples(tiny_catalog, encoder, tiny_policy):
    from r4t.rewards.set_metrics import set_quality

    reward = RewardConfig(k=TINY_K)
    q = encoder.encode(QUERIES)
    best = LMFanout("best-of-4", str(tiny_policy), encoder, tiny_catalog.index, tiny_catalog.emb, PLAIN_TEMPLATE,
                    TINY_K, max_new_tokens=48, seed=2, samples=4, reward=reward)
    subqueries = best.generate(QUERIES, q)
    assert len(subqueries) == 12
    every = best.ground_each(subqueries, 5, 2)
    score = set_quality(np.repeat(q, 4, axis=0), every.items, tiny_catalog.emb, every.ground, reward)["composite"]
    res = best.retrieve(QUERIES, q, 5, 2)
    _check(res, 3, 5, tiny_catalog.emb)
    chosen = set_quality(q, res.items, tiny_catalog.emb, res.ground, reward)["composite"]
    np.testing.assert_allclose(chosen, score.reshape(3, 4).max(axis=1))


def test_mmr_trades_relevance_for_diversity(tiny_catalog, encoder):
    q = encoder.encode(["red leather boots"])
    nearest = tiny_catalog.index.search(q, 6)[1][0]
    texts = item_groups(tiny_catalog.index)
    relevance_only = MMR(tiny_catalog.index, tiny_catalog.emb, lam=1.0, candidates=30).select(q, 6, texts)[0]
    np.testing.assert_array_equal(relevance_only, nearest)  # lam = 1: plain nearest neighbours
    diverse = MMR(tiny_catalog.index, tiny_catalog.emb, lam=0.3, candidates=30).select(q, 6, texts)[0]
    assert len(set(diverse.tolist())) == 6 and diverse[0] == nearest[0]
    codes = tiny_catalog.category_codes
    assert len(set(codes[diverse])) > len(set(codes[nearest]))  # more categories than the 6 nearest
    res = MMR(tiny_catalog.index, tiny_catalog.emb).retrieve(["q"], q, 4, 2)
    _check(res, 1, 4, tiny_catalog.emb, ordered=False)  # in the order MMR picked them


def test_category_diverse_takes_one_item_per_category(tiny_catalog, encoder):
    q = encoder.encode(QUERIES)
    codes = tiny_catalog.category_codes
    method = CategoryDiverse(tiny_catalog.index, tiny_catalog.emb, codes, candidates=40)
    res = method.retrieve(QUERIES, q, 4, 2)
    _check(res, 3, 4, tiny_catalog.emb, ordered=False)
    assert all(len(set(codes[row])) == 4 for row in res.items)  # the tiny catalog has 5 categories
    for row, retrieved in zip(res.items, res.retrieved):  # WSCR: m*K items, at most m per category
        assert len(retrieved) == 8 and np.bincount(codes[retrieved]).max() <= 2
        assert row[0] == retrieved[0]  # both start at the query's nearest item


DUP_QUERIES = ["home decor", "beach hair", "cozy cabin weekend"]


def _one_per_text(result, catalog, k: int) -> None:
    assert result.items.shape == (len(result.generated), k)
    for row in result.items:
        assert len({text_key(catalog.texts[r]) for r in row}) == k, [catalog.texts[r] for r in row]


def test_no_method_returns_the_same_text_twice(dup_catalog, encoder, tiny_policy):
    cat, k, m = dup_catalog, 4, 2
    q = encoder.encode(DUP_QUERIES)
    nearest = cat.index.search(q, k)[1]
    assert len({text_key(cat.texts[r]) for r in nearest[0]}) == 1  # the K nearest of "home decor": one text

    class Collapsed:  # a latent policy whose k rows all sit on "Home Decor"
        def rows(self, query_emb):
            return np.repeat(cat.emb[None, :1], len(query_emb), axis=0).repeat(k, axis=1)

    torch.manual_seed(0)
    model = EDMDenoiser(DenoiserConfig(dim=cat.emb.shape[1], rows=3, hidden=32, mlp=64, heads=2, layers=1),
                        sigma_data=0.05).eval()
    methods = [NoFanout(cat.index, cat.emb), CategoryDiverse(cat.index, cat.emb, cat.category_codes, candidates=k),
               MMR(cat.index, cat.emb, lam=1.0, candidates=k), RLlibPolicyFanout(Collapsed(), cat.index, cat.emb),
               DiffusionFanout(model, SamplerConfig(method="heun", steps=2), cat.index, cat.emb)]
    for method in methods:
        _one_per_text(method.retrieve(DUP_QUERIES, q, k, m), cat, k)
    lm = LMFanout("R4T-FOLM", str(tiny_policy), encoder, cat.index, cat.emb, PLAIN_TEMPLATE, TINY_K,
                  max_new_tokens=48)
    _one_per_text(lm.ground_each([["Home Decor", "home decor!"], ["hair casual beach"], ["HOME DECOR", "straw beach hat"]],
                            k, m), cat, k)
    # WSCR keeps plain nearest neighbours by id: no fan-out's m*K, duplicates included.
    res = NoFanout(cat.index, cat.emb).retrieve(DUP_QUERIES, q, k, m)
    for b in range(len(q)):
        np.testing.assert_array_equal(res.retrieved[b], cat.index.search(q, m * k)[1][b])


def test_teacher_overlap_is_the_jaccard_of_the_item_sets():
    per_method = {"R4T-FOLM": {"oar": {}, "items": {"oar": np.array([[1, 2, 3], [4, 5, 6]])}},
                  "R4T-Diffusion": {"oar": {}, "items": {"oar": np.array([[3, 2, 1], [4, 7, 8]])}}}
    teacher_overlap(per_method)
    assert per_method["R4T-Diffusion"]["oar"]["teacher_jaccard"]["mean"] == pytest.approx((1 + 1 / 5) / 2)
    assert "teacher_jaccard" not in per_method["R4T-FOLM"]["oar"]
    assert all("items" not in res for res in per_method.values())  # arrays never reach metrics.json
