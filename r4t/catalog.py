"""A prepared catalog: the dataset, its item embeddings and its faiss index, under <run_dir>/<name>/.

`prepare_catalog` builds what is missing and reuses what a previous run finished (each artifact is checked
against its manifest), so a killed run resumes where it stopped. The index it returns carries the items' text
groups (`index.dup_group`), which grounding keeps distinct (r4t.grounding).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa

from r4t.config import DatasetSpec, IndexConfig
from r4t.data.catalogs import load_dataset
from r4t.data.dataset import INFO_FILE, Dataset
from r4t.embed import TextEncoder, embed_catalog, load_embeddings
from r4t.errors import ConfigError, DataError, ManifestMismatch
from r4t.grounding import attach_texts
from r4t.index import MANIFEST_FILE, ItemIndex, gpu_available
from r4t.io import read_json
from r4t.storage import fetch, publish, run_root


def category_codes(items: pa.Table) -> np.ndarray:
    """[N] int codes of the items' `category` column (coarse group or primary artist)."""
    return np.asarray(items.column("category").dictionary_encode().combine_chunks().indices)


@dataclass
class PreparedCatalog:
    name: str
    dataset: Dataset
    item_emb: np.ndarray  # [N, d] float32, row i = dataset.items row i = index row i
    index: ItemIndex  # with the items' text groups attached (r4t.grounding.attach_texts)

    @cached_property
    def category_codes(self) -> np.ndarray:
        return category_codes(self.dataset.items)

    @property
    def fingerprint(self) -> dict:
        """What a model trained on this catalog records of it, and is checked against when loaded for it."""
        return {"catalog_hash": self.dataset.catalog_hash, "dim": self.index.dim,
                "encoder": self.index.manifest["encoder"]}

    @property
    def texts(self) -> list[str]:
        return self.dataset.items.column("text").to_pylist()

    def queries(self, task: str, split: str) -> pa.Table:
        return self.dataset.queries_for(task, split)


def resolve_gpu(cfg: IndexConfig) -> bool:
    if cfg.gpu == "on" and not gpu_available():
        raise ConfigError("index.gpu='on': faiss reports no GPU (install faiss-gpu on a GPU machine, or use auto)")
    return cfg.gpu == "on" or (cfg.gpu == "auto" and gpu_available())


def _index_identity(cfg: IndexConfig, embed_manifest: dict) -> dict:
    keys = ("encoder", "weights_hash", "dim", "catalog_hash")
    return {"factory": cfg.factory, "shards": cfg.shards, **{k: embed_manifest[k] for k in keys}}


def prepare_catalog(spec: DatasetSpec, run_dir: str | Path, encoder: TextEncoder, index_cfg: IndexConfig,
                    seed: int = 0, progress: bool = True) -> PreparedCatalog:
    root = run_root(run_dir) / spec.name
    for part in ("data", "index"):
        fetch(root / part)
    dataset = load_dataset(spec, seed)
    saved = read_json(root / "data" / INFO_FILE) if (root / "data" / INFO_FILE).is_file() else {}
    if saved.get("catalog_hash") != dataset.catalog_hash or saved.get("queries") != dataset.queries.num_rows:
        dataset.save(root / "data")
    emb, emb_manifest = embed_catalog(dataset.items.column("text").to_pylist(), dataset.catalog_hash, encoder,
                                      root / "index", progress=progress)
    identity = _index_identity(index_cfg, emb_manifest)
    use_gpu = resolve_gpu(index_cfg)
    index = None
    if (root / "index" / MANIFEST_FILE).is_file():
        try:
            index = ItemIndex.load(root / "index", use_gpu, index_cfg.nprobe, index_cfg.ef_search, expect=identity)
        except (DataError, ManifestMismatch):
            index = None  # stale or damaged: rebuilt below
    if index is None:
        index = ItemIndex.build(emb, dataset.items.column("item_id").to_pylist(), index_cfg.factory,
                                index_cfg.shards, identity, use_gpu, index_cfg.nprobe, index_cfg.ef_search, seed)
        index.save(root / "index")
    for part in ("data", "index"):
        publish(root / part)
    return PreparedCatalog(spec.name, dataset, emb, attach_texts(index, dataset.items.column("text").to_pylist()))


def load_catalog(root: str | Path, nprobe: int = 16, ef_search: int = 64) -> PreparedCatalog:
    """The catalog the data stage prepared under <run_dir>/<dataset>, as it is on disk (fetched onto this node
    first for a URI run_dir): nothing is embedded or rebuilt, so a server never needs the encoder to start."""
    root = Path(root)
    for part in ("data", "index"):
        fetch(root / part)
    dataset = Dataset.load(root / "data")
    texts = dataset.items.column("text").to_pylist()
    index = ItemIndex.load(root / "index", nprobe=nprobe, ef_search=ef_search)
    return PreparedCatalog(root.name, dataset, load_embeddings(root / "index")[0], attach_texts(index, texts))
