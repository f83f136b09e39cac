"""Typed config schemas per stage, loaded from YAML with OmegaConf and overridden by dotted keys.

    cfg = load_config(PrepareConfig, "jobs/data.yaml", ["index.factory=IVF256,Flat"])

An unknown key, a value of the wrong type or an out-of-range value raises ConfigError naming the key, the
value and where it came from (the YAML file or the command line), before any work starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from r4t.errors import ConfigError

BUILTIN_DATASETS = ("polyvore", "playlists")
DATASET_FORMATS = ("builtin", "r4t", "maryland", "polyvore_outfits", "mpd", "fashion_jsonl", "playlists_jsonl")


def _require(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {why}")


@dataclass
class EmbedConfig:
    model: str = "minilm"  # "minilm" (the packaged all-MiniLM-L6-v2) or a sentence-transformers folder
    device: str = "cpu"
    batch_size: int = 32  # on 2 CPU cores 32 encodes ~1.4x faster than 256 (less padding)

    def __post_init__(self) -> None:
        _require(self.batch_size > 0, "embed.batch_size", self.batch_size, "must be positive")


@dataclass
class IndexConfig:
    factory: str = "Flat"  # any faiss index_factory string, e.g. "IVF256,Flat", "HNSW32"
    nprobe: int = 16  # IVF cells visited per search
    ef_search: int = 64  # HNSW candidate list size per search
    shards: int = 1
    gpu: str = "auto"  # auto | on | off

    def __post_init__(self) -> None:
        # YAML reads a bare on/off as a boolean, which OmegaConf hands this str field as "True"/"False".
        self.gpu = {"true": "on", "false": "off"}.get(str(self.gpu).lower(), self.gpu)
        _require(self.nprobe > 0, "index.nprobe", self.nprobe, "must be positive")
        _require(self.ef_search > 0, "index.ef_search", self.ef_search, "must be positive")
        _require(self.shards > 0, "index.shards", self.shards, "must be positive")
        _require(self.gpu in ("auto", "on", "off"), "index.gpu", self.gpu, "must be one of auto, on, off")


@dataclass
class RewardConfig:
    k: int = 10  # sub-queries per fan-out
    w_ground: float = 0.6
    w_div: float = 0.2
    w_align: float = 0.2
    wscr_m: int = 5  # items retrieved per sub-query for WSCR coverage
    malformed_penalty: float = -1.0  # reward of a completion that does not parse into k sub-queries

    def __post_init__(self) -> None:
        _require(self.k >= 2, "reward.k", self.k, "must be at least 2")
        _require(self.wscr_m >= 1, "reward.wscr_m", self.wscr_m, "must be at least 1")
        for name in ("w_ground", "w_div", "w_align"):
            _require(getattr(self, name) >= 0, f"reward.{name}", getattr(self, name), "must be non-negative")


@dataclass
class DatasetSpec:
    name: str = "polyvore"
    format: str = "builtin"  # see DATASET_FORMATS; "r4t" = a folder with items/sets/queries.parquet
    path: Optional[str] = None  # source file or folder for every format but "builtin"

    def __post_init__(self) -> None:
        _require(self.format in DATASET_FORMATS, "datasets[].format", self.format, f"must be one of {DATASET_FORMATS}")
        if self.format == "builtin":
            _require(self.name in BUILTIN_DATASETS, "datasets[].name", self.name,
                     f"unknown built-in dataset; built-in: {BUILTIN_DATASETS}")
        else:
            _require(bool(self.path), "datasets[].path", self.path, f"format {self.format!r} needs a path")


@dataclass
class BaselineEvalConfig:
    k: int = 10  # items per returned set
    split: str = "test"
    max_queries: int = 0  # 0 = all queries of the split
    candidates: int = 256  # nearest items the category-diverse heuristic chooses from

    def __post_init__(self) -> None:
        _require(self.split in ("train", "val", "test"), "eval.split", self.split, "must be train, val or test")
        _require(self.k >= 2, "eval.k", self.k, "must be at least 2")
        _require(self.max_queries >= 0, "eval.max_queries", self.max_queries, "must be >= 0")


@dataclass
class PrepareConfig:
    """Data → embeddings → index → baseline table (jobs/data.yaml, the first stage of the demo)."""

    run_dir: str = "runs/demo"
    seed: int = 0
    datasets: list[DatasetSpec] = field(
        default_factory=lambda: [DatasetSpec("polyvore"), DatasetSpec("playlists")])
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    eval: BaselineEvalConfig = field(default_factory=BaselineEvalConfig)


T = TypeVar("T")


def _describe(e: OmegaConfBaseException) -> str:
    msg = (getattr(e, "msg", None) or str(e) or type(e).__name__).splitlines()[0]
    key = getattr(e, "full_key", None)
    return f"key '{key}': {msg}" if key else msg


def load_config(schema: type[T], path: str | os.PathLike | None = None, overrides: list[str] = ()) -> T:
    """Schema defaults ← YAML file ← dotted overrides, checked at each step; returns a schema instance."""
    cfg = OmegaConf.structured(schema)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
        except OmegaConfBaseException as e:
            raise ConfigError(f"{path}: {_describe(e)}") from None
        except Exception as e:  # YAML syntax errors come from the yaml parser
            raise ConfigError(f"{path}: cannot parse YAML ({str(e).splitlines()[0]})") from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"command line: override {item!r} is not of the form key=value")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as e:
            raise ConfigError(f"command line override {item!r}: {_describe(e)}") from None
    source = f"{path or 'defaults'}{' + command line' if overrides else ''}"
    try:
        return OmegaConf.to_object(cfg)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: {_describe(e)}") from None


def to_dict(obj: Any) -> dict:
    """A config instance as plain data, for manifests and logs."""
    if is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    return obj
