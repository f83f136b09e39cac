"""Retrieval-augmented prompts: the nearest catalog items in the prompt, and a warm start that learns to choose
among them."""

from __future__ import annotations

import numpy as np

from conftest import TINY_K, TINY_QUERIES
from r4t.config import BootstrapConfig
from r4t.grounding import text_key
from r4t.policy.backend import SamplingSettings
from r4t.policy.bootstrap import bootstrap_policy, context_fanouts
from r4t.policy.context import PromptContext, fanout_prompts, resolve
from r4t.policy.hf_backend import TransformersBackend
from r4t.rewards.parse import usable_subqueries

TEMPLATE = "items:\n{context}\nquery: {query}\nsub-queries:\n"


def test_context_lists_the_nearest_distinct_texts_nearest_first(tiny_catalog, encoder):
    texts = tiny_catalog.texts + [tiny_catalog.texts[0].upper() + "."]  # a near-copy under another row
    emb = np.vstack([tiny_catalog.emb, tiny_catalog.emb[:1]])
    from r4t.index import ItemIndex
    index = ItemIndex.build(emb, [f"r{i}" for i in range(len(texts))], "Flat",
                            embed_manifest={**encoder.manifest, "catalog_hash": "ctx"})
    q = emb[:1]
    rows = PromptContext(index, texts, 5).rows(q)[0]
    assert len(rows) == 5 and len({text_key(texts[r]) for r in rows}) == 5
    sims = emb[rows] @ q[0]
    assert np.all(np.diff(sims) <= 1e-6)  # nearest first
    prompts, listed = fanout_prompts(["a query"], q, TEMPLATE, 3, PromptContext(index, texts, 5))
    assert listed[0] == [texts[r] for r in rows]
    assert prompts[0].startswith(f"items:\n[1] {texts[rows[0]]}\n[2] {texts[rows[1]]}\n")
    assert prompts[0].endswith("query: a query\nsub-queries:\n")


def test_context_caps_each_category(tiny_catalog):
    codes = tiny_catalog.category_codes
    rows = PromptContext(tiny_catalog.index, tiny_catalog.texts, 8, codes, per_category=2).rows(tiny_catalog.emb[:3])
    for r in rows:
        assert len(r) == 8 and np.bincount(codes[r]).max() <= 2


def test_resolve_replaces_references_to_listed_items_only():
    listed = ["red boots", "straw hat"]
    assert resolve("1. [2]\n2. [1] in suede\n3. [3]\n4. plain text", listed) == \
        "1. straw hat\n2. red boots in suede\n3. [3]\n4. plain text"
    assert resolve("[1]", []) == "[1]"


def test_context_lists_the_nearest_item_of_each_category_first(tiny_catalog):
    codes = tiny_catalog.category_codes
    n_categories = len(np.unique(codes))
    rows = PromptContext(tiny_catalog.index, tiny_catalog.texts, n_categories + 3, codes, 1).rows(tiny_catalog.emb[:2])
    for r in rows:
        assert len(set(codes[r[:n_categories]])) == n_categories  # one per category, then the nearest of the rest
        sims = tiny_catalog.emb[r] @ tiny_catalog.emb[r[0]]
        assert np.all(np.diff(sims[n_categories:]) <= 1e-6)


def test_context_fanouts_name_the_first_k_listed_items_with_a_few_distinct_swaps():
    rng = np.random.default_rng(0)
    assert context_fanouts([["a", "b", "c", "d"], ["a", "b"]], 3, rng, swap=0.0) == [["[1]", "[2]", "[3]"],
                                                                                   ["[1]", "[2]"]]
    fanouts = context_fanouts([[str(i) for i in range(16)]] * 200, 10, rng, swap=0.2)
    assert all(len(set(f)) == 10 for f in fanouts)  # never a repeat
    swapped = np.mean([ref not in {f"[{i}]" for i in range(1, 11)} for f in fanouts for ref in f])
    assert 0.15 < swapped < 0.25


def test_a_context_warm_start_copies_listed_items(tmp_path, tiny_catalog, encoder):
    """The retrieval-augmented warm start learns to pick listed items: most sub-queries it samples for the
    training queries resolve to listed items' texts."""
    ctx = PromptContext(tiny_catalog.index, tiny_catalog.texts, 6)
    cfg = BootstrapConfig(vocab_size=400, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2,
                          num_kv_heads=1, max_positions=256, sft_epochs=60, sft_lr=3e-3, sft_batch_size=2)
    q = encoder.encode(TINY_QUERIES)
    policy = bootstrap_policy(tmp_path / "warm", tiny_catalog.texts, TINY_QUERIES, q, tiny_catalog.index, cfg,
                              TEMPLATE, TINY_K, 0, {}, ctx)
    prompts, listed = fanout_prompts(TINY_QUERIES, q, TEMPLATE, TINY_K, ctx)
    out = TransformersBackend(str(policy)).generate(prompts, SamplingSettings(n=2, max_new_tokens=32, seed=0))
    lines = [(s, r.prompt_index) for r in out
             for s in usable_subqueries(resolve(r.text, listed[r.prompt_index]), TINY_K)]
    copied = np.mean([s in listed[i] for s, i in lines])
    assert len(lines) >= len(out) and copied > 0.7, copied
