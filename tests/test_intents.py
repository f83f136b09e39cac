"""OAR intent lists (r4t.data.intents): size, distinctness, determinism and leak-free splits."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter, defaultdict

import pytest

from r4t.data import intents as mod
from r4t.data.intents import DOMAINS, intents, normalize, split_intents
from r4t.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


@pytest.fixture(params=["fashion", "music"])
def domain(request) -> str:
    return request.param


def _bag(text: str) -> tuple[str, ...]:
    return tuple(sorted(mod._words(text)))


def test_domains():
    assert set(DOMAINS) == {"fashion", "music"}


def test_at_least_450_intents(domain):
    assert len(intents(domain)) >= 450


def test_intents_are_distinct_after_normalization(domain):
    items = intents(domain)
    dupes = [t for t, n in Counter(normalize(t) for t in items).items() if n > 1]
    assert not dupes


def test_no_word_order_near_duplicates(domain):
    dupes = [b for b, n in Counter(_bag(t) for t in intents(domain)).items() if n > 1]
    assert not dupes


def test_intents_are_clean_lowercase_phrases_of_2_to_8_words(domain):
    for t in intents(domain):
        assert isinstance(t, str)
        assert t == t.strip() and "  " not in t, t
        assert t == t.lower(), t
        assert 2 <= len(t.split()) <= 8, t
        assert " a a" not in f" {t}" and not any(f" a {v}" in f" {t}" for v in "aeiou"), t  # article fixed


def test_freestanding_and_anchor_intents_are_included(domain):
    items = set(intents(domain))
    free = mod._FASHION_FREESTANDING if domain == "fashion" else mod._MUSIC_FREESTANDING
    anchors = mod._FASHION_ANCHORS if domain == "fashion" else mod._MUSIC_ANCHORS
    assert len(free) >= 60
    assert set(free) <= items
    assert {text for _, _, text in anchors} <= items


def test_brief_examples_present():
    assert {"bohemian festival outfit", "minimalist office look", "what to wear to a winter wedding",
            "capsule wardrobe for a weekend in paris", "outfit for a rooftop party in july"} <= set(intents("fashion"))
    assert {"rainy sunday playlist", "upbeat songs for a morning run", "90s throwback party",
            "mellow acoustic evening"} <= set(intents("music"))


def test_anchor_keys_name_real_facets():
    """An anchor must share its key with the composed phrasings of the same facets, so its names must exist."""
    fashion = {
        "style-occasion": ({s[0] for s in mod._STYLES}, {o[0] or o[1] for o in mod._OCCASIONS}),
        "occasion": ({o[0] or o[1] for o in mod._OCCASIONS},),
        "season-event": (set(mod._SEASONS), {e[0] for e in mod._SEASONAL_EVENTS}),
    }
    music = {
        "activity": ({a[0] or a[1] for a in mod._ACTIVITIES},),
        "mood-activity": ({m[0] for m in mod._MOODS}, {a[0] or a[1] for a in mod._ACTIVITIES}),
        "era-setting": (set(mod._ERAS), {s[0] for s in mod._ERA_SETTINGS}),
        "texture-time": (set(mod._TEXTURES), {t[0] for t in mod._TIMES}),
    }
    for facets, anchors in ((fashion, mod._FASHION_ANCHORS), (music, mod._MUSIC_ANCHORS)):
        for family, names, text in anchors:
            assert len(names) == len(facets[family]), text
            for name, known in zip(names, facets[family]):
                assert name in known, (text, name)


def test_several_facet_families_contribute(domain):
    families = Counter(r.key.split(":", 1)[0] for r in mod._records(domain))
    assert len(families) >= 4
    assert families["free"] >= 60
    # no single family swamps the list
    assert max(families.values()) < 0.75 * sum(families.values())


def test_deterministic(domain):
    a, b = intents(domain), intents(domain)
    assert a == b
    a.append("mutated")  # callers get a fresh list
    assert intents(domain) == b
    assert split_intents(domain) == split_intents(domain)


def test_deterministic_across_processes_and_hash_seeds():
    code = ("import hashlib; from r4t.data.intents import intents, split_intents; "
            "print(hashlib.sha256(repr([(d, intents(d), split_intents(d)) for d in ('fashion', 'music')])"
            ".encode()).hexdigest())")
    digests = set()
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        digests.add(out.stdout.strip())
    here = hashlib.sha256(repr([(d, intents(d), split_intents(d)) for d in ("fashion", "music")]).encode()).hexdigest()
    assert digests == {here}


def test_splits_partition_the_list(domain):
    items = intents(domain)
    parts = split_intents(domain)
    assert set(parts) == set(SPLITS)
    assert sorted(t for s in SPLITS for t in parts[s]) == sorted(items)
    assert sum(len(parts[s]) for s in SPLITS) == len(items)
    for s in SPLITS:  # each split keeps intents() order
        rank = {t: i for i, t in enumerate(items)}
        assert [rank[t] for t in parts[s]] == sorted(rank[t] for t in parts[s])


def test_splits_are_disjoint(domain):
    parts = {s: set(v) for s, v in split_intents(domain).items()}
    assert not parts["train"] & parts["test"]
    assert not parts["train"] & parts["val"]
    assert not parts["val"] & parts["test"]


@pytest.mark.parametrize("val_frac,test_frac", [(0.1, 0.2), (0.15, 0.15), (0.0, 0.3)])
def test_no_facet_key_in_two_splits(domain, val_frac, test_frac):
    split_of = {t: s for s, ts in split_intents(domain, val_frac, test_frac).items() for t in ts}
    splits_of_key = defaultdict(set)
    for r in mod._records(domain):
        splits_of_key[r.key].add(split_of[r.text])
    assert all(len(s) == 1 for s in splits_of_key.values())
    # the check has teeth: many combinations are phrased more than once
    per_key = Counter(r.key for r in mod._records(domain))
    assert sum(1 for n in per_key.values() if n > 1) >= 50


def test_split_sizes_near_fractions(domain):
    n = len(intents(domain))
    parts = split_intents(domain)
    assert abs(len(parts["val"]) / n - 0.1) <= 0.05
    assert abs(len(parts["test"]) / n - 0.2) <= 0.05
    assert abs(len(parts["train"]) / n - 0.7) <= 0.05
    parts = split_intents(domain, val_frac=0.2, test_frac=0.3)
    assert abs(len(parts["val"]) / n - 0.2) <= 0.05
    assert abs(len(parts["test"]) / n - 0.3) <= 0.05


def test_split_is_stable_when_fractions_grow(domain):
    """Cuts along one hash ranking: a larger test_frac only moves intents into test, never out of it."""
    small, big = split_intents(domain, 0.1, 0.2), split_intents(domain, 0.1, 0.3)
    assert set(small["test"]) <= set(big["test"])


def test_zero_fractions_put_everything_in_train(domain):
    parts = split_intents(domain, val_frac=0.0, test_frac=0.0)
    assert parts["train"] == intents(domain) and parts["val"] == [] and parts["test"] == []


def test_unknown_domain_raises_data_error():
    with pytest.raises(DataError) as e:
        intents("furniture")
    assert "furniture" in str(e.value)
    assert "fashion" in str(e.value) and "music" in str(e.value)
    with pytest.raises(DataError, match="furniture"):
        split_intents("furniture")


@pytest.mark.parametrize("val_frac,test_frac", [(-0.1, 0.2), (0.1, 1.0), (0.5, 0.5), (0.7, 0.4)])
def test_bad_fractions_raise_config_error(val_frac, test_frac):
    with pytest.raises(ConfigError):
        split_intents("fashion", val_frac, test_frac)
