"""Shared fixtures: the real packaged MiniLM encoder and a tiny, obviously-categorized catalog indexed with it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

CATALOG: dict[str, list[str]] = {
    "shoes": [
        "red leather ankle boots",
        "white canvas low-top sneakers",
        "black suede penny loafers",
        "nude patent stiletto pumps",
        "brown leather hiking boots",
        "silver strappy high-heel sandals",
        "navy mesh running shoes",
        "tan espadrille wedges",
    ],
    "bags": [
        "black leather tote bag",
        "small quilted crossbody bag with chain strap",
        "canvas beach tote with rope handles",
        "brown leather backpack",
        "beaded evening clutch",
        "nylon belt bag",
        "straw bucket bag",
        "red patent leather shoulder bag",
    ],
    "dresses": [
        "floral print maxi dress",
        "little black cocktail dress",
        "red silk slip dress",
        "striped cotton shirt dress",
        "white lace sundress",
        "green satin evening gown",
        "denim pinafore dress",
        "knitted wool sweater dress",
    ],
    "hats": [
        "wide brim straw sun hat",
        "black wool fedora",
        "navy baseball cap",
        "grey knitted beanie",
        "tan bucket hat",
        "felt cloche hat",
        "panama hat with black band",
        "leather newsboy cap",
    ],
    "jewelry": [
        "gold hoop earrings",
        "pearl stud earrings",
        "silver chain necklace",
        "diamond tennis bracelet",
        "rose gold signet ring",
        "layered gold pendant necklace",
        "turquoise beaded bracelet",
        "sterling silver cuff bangle",
    ],
}


@dataclass(frozen=True)
class TinyCatalog:
    texts: list[str]  # item texts, row order
    ids: list[str]  # "i0", "i1", ...
    categories: list[str]  # category name per row
    emb: np.ndarray  # [N, d] float32, unit norm, from the `encoder` fixture
    index: "object"  # r4t.index.ItemIndex (Flat, inner product) over `emb`

    @property
    def category_codes(self) -> np.ndarray:
        names = sorted(set(self.categories))
        return np.array([names.index(c) for c in self.categories], dtype=np.int64)

    def row(self, text: str) -> int:
        return self.texts.index(text)


@pytest.fixture(scope="session")
def encoder():
    from r4t.embed import TextEncoder

    return TextEncoder()


@pytest.fixture(scope="session")
def tiny_catalog(encoder) -> TinyCatalog:
    from r4t.index import ItemIndex

    texts = [t for items in CATALOG.values() for t in items]
    categories = [c for c, items in CATALOG.items() for _ in items]
    ids = [f"i{i}" for i in range(len(texts))]
    emb = encoder.encode(texts)
    index = ItemIndex.build(emb, ids, "Flat", embed_manifest={**encoder.manifest, "catalog_hash": "test"})
    return TinyCatalog(texts, ids, categories, emb, index)
