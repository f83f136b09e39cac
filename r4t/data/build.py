"""Shared pieces of the dataset builders: stable splits, query rows, assembly into a Dataset."""

from __future__ import annotations

import hashlib
import re
import unicodedata

import pyarrow as pa

from r4t.data.dataset import Dataset
from r4t.data.schema import CATALOG_SCHEMA, QUERIES_SCHEMA, SETS_SCHEMA

# Reference sets are split by title, so a title that several curators reused ("Work Wear") never sits in
# train and test at once.
SET_SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def stable_fraction(key: str, salt: str = "") -> float:
    """A deterministic number in [0, 1) from a string (unlike hash(), it is not salted per process)."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def stable_split(key: str, fractions: dict[str, float] = SET_SPLIT_FRACTIONS, salt: str = "") -> str:
    u, acc = stable_fraction(key, salt), 0.0
    for split, frac in fractions.items():
        acc += frac
        if u < acc:
            return split
    return split


def normalize_title(text: str) -> str:
    """Casefolded, accent- and punctuation-free form of a title, for grouping identical titles."""
    text = unicodedata.normalize("NFKD", text).casefold()
    return re.sub(r"[^\w]+", " ", text).strip()


def clean_text(text: str) -> str:
    return " ".join(text.split())


def short_hash(text: str, n: int = 12) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def oar_query_rows(domain: str) -> list[dict]:
    from r4t.data.intents import split_intents

    return [{"query_id": f"oar-{short_hash(text)}", "text": text, "split": split, "task": "oar", "set_id": None}
            for split, texts in split_intents(domain).items() for text in texts]


def assemble(name: str, items: list[dict], extra_item_columns: dict[str, pa.DataType], sets: list[dict],
             queries: list[dict]) -> Dataset:
    """Rows (dicts) → a validated Dataset; item columns beyond the catalog schema are kept as attributes."""
    item_schema = pa.schema(list(CATALOG_SCHEMA) + [pa.field(k, t) for k, t in extra_item_columns.items()])
    return Dataset(
        name=name,
        items=pa.Table.from_pylist(items, schema=item_schema),
        sets=pa.Table.from_pylist(sets, schema=SETS_SCHEMA),
        queries=pa.Table.from_pylist(queries, schema=QUERIES_SCHEMA),
    ).validate(name)
