"""Hand-written evaluation intents (r4t.data.handwritten): size, shape, distinctness, and no overlap with the
template intents or the built-in datasets' own queries and set titles."""

from __future__ import annotations

import tomllib
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest

from r4t.config import BUILTIN_DATASETS
from r4t.data import intents as intents_mod
from r4t.data.catalogs import builtin_dir
from r4t.data.dataset import Dataset
from r4t.data.handwritten import HANDWRITTEN_DATASETS, handwritten_queries
from r4t.data.intents import MAX_WORDS, MIN_WORDS, intents, normalize

# The intent domain each built-in dataset's OAR queries are composed from (see r4t/data/fashion.py, music.py).
DOMAIN_OF = {"polyvore": "fashion", "playlists": "music"}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=HANDWRITTEN_DATASETS)
def dataset(request) -> str:
    return request.param


@lru_cache(maxsize=None)
def _builtin_texts(name: str) -> frozenset[str]:
    """Every query text (both tasks, all splits) and every set title of built-in `name`, folded."""
    ds = Dataset.load(builtin_dir(name))
    texts = ds.queries.column("text").to_pylist() + ds.sets.column("query").to_pylist()
    return frozenset(normalize(t) for t in texts)


def _bag(text: str) -> tuple[str, ...]:
    return tuple(sorted(intents_mod._words(text)))


def test_every_builtin_dataset_has_a_set():
    assert set(HANDWRITTEN_DATASETS) == set(BUILTIN_DATASETS) == set(DOMAIN_OF)


def test_at_least_100_intents(dataset):
    assert len(handwritten_queries(dataset)) >= 100


def test_file_has_header_comment_and_comments_are_skipped(dataset):
    path = REPO / "r4t" / "data" / "handwritten" / f"{dataset}.txt"
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("#") and "evaluation" in first
    queries = handwritten_queries(dataset)
    assert not any(q.startswith("#") or not q.strip() for q in queries)
    # Every non-comment, non-blank line is returned, in order.
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    assert queries == [ln for ln in lines if ln and not ln.startswith("#")]


def test_intents_are_lowercase_and_short(dataset):
    bad = [q for q in handwritten_queries(dataset)
           if q != q.lower() or q != normalize(q) or not MIN_WORDS <= len(q.split()) <= MAX_WORDS]
    assert not bad


def test_no_duplicates_after_folding(dataset):
    queries = handwritten_queries(dataset)
    dupes = [t for t, n in Counter(normalize(q) for q in queries).items() if n > 1]
    assert not dupes
    # Nor two that differ only in word order.
    bag_dupes = [b for b, n in Counter(_bag(q) for q in queries).items() if n > 1]
    assert not bag_dupes


def test_disjoint_from_template_intents(dataset):
    queries = handwritten_queries(dataset)
    templates = [t for domain in DOMAIN_OF.values() for t in intents(domain)]
    assert len(intents(DOMAIN_OF[dataset])) > 0
    folded = {normalize(t) for t in templates}
    bags = {_bag(t) for t in templates}
    assert not [q for q in queries if normalize(q) in folded]
    assert not [q for q in queries if _bag(q) in bags]


def test_disjoint_from_builtin_queries_and_set_titles(dataset):
    builtin = _builtin_texts(dataset)
    assert builtin  # the built-in dataset loaded and has queries
    # The built-in OAR queries are the template intents; the check must see them, or it checks nothing.
    assert normalize(intents(DOMAIN_OF[dataset])[0]) in builtin
    assert not [q for q in handwritten_queries(dataset) if normalize(q) in builtin]


def test_unknown_dataset_has_none():
    assert handwritten_queries("no-such-dataset") == []
    assert handwritten_queries("../handwritten/polyvore") == []


def test_files_ship_as_package_data():
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "handwritten/*.txt" in config["tool"]["setuptools"]["package-data"]["r4t.data"]
