"""What every stage's config shares: the run folder, the datasets, the encoder, the index and the set reward
(RunConfig and its sections), and the check every schema uses to name a bad value.

Every stage's schema extends RunConfig, so `run_dir`, `seed`, `datasets`, `embed`, `index` and `reward` mean the
same in every job file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Optional

from r4t.errors import ConfigError

BUILTIN_DATASETS = ("polyvore", "playlists")
DATASET_FORMATS = ("builtin", "r4t", "maryland", "polyvore_outfits", "mpd", "fashion_jsonl", "playlists_jsonl")


def _require(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {why}")


def _check_resources(key: str, resources: dict) -> None:
    reserved = {"CPU", "GPU", "memory", "object_store_memory"} & set(resources)
    _require(not reserved, key, dict(resources), f"{sorted(reserved)} are set by the cpus/gpus keys, not here")
    _require(all(v > 0 for v in resources.values()), key, dict(resources), "amounts must be positive")


def _check_actors(obj: Any, resources: str, counts: tuple[str, ...], amounts: tuple[str, ...]) -> None:
    """The checks of a group of Ray actors (its fields read as workers.<name>): custom resources, counts of actors
    and threads (at least 1), logical CPU and GPU amounts (non-negative)."""
    _check_resources(f"workers.{resources}", getattr(obj, resources))
    for name in counts:
        _require(getattr(obj, name) >= 1, f"workers.{name}", getattr(obj, name), "must be at least 1")
    for name in amounts:
        _require(getattr(obj, name) >= 0, f"workers.{name}", getattr(obj, name), "must be non-negative")


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
    # WSCR reward: coverage = |Y ∩ R(Q)| / |Y| (exact, mostly 0) | soft_coverage = mean over y in Y of
    # max over r in R(Q) of cos(e(y), e(r)) (dense). The reported recall is always the exact coverage.
    wscr_reward: str = "coverage"
    malformed_penalty: float = -1.0  # reward of a completion that does not parse into k sub-queries

    def __post_init__(self) -> None:
        _require(self.k >= 2, "reward.k", self.k, "must be at least 2")
        _require(self.wscr_m >= 1, "reward.wscr_m", self.wscr_m, "must be at least 1")
        _require(self.wscr_reward in ("coverage", "soft_coverage"), "reward.wscr_reward", self.wscr_reward,
                 "must be coverage or soft_coverage")
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
class RunConfig:
    """What every stage shares: where artifacts go, the datasets, the encoder, the index, the reward."""

    run_dir: str = "runs/demo"
    seed: int = 0
    datasets: list[DatasetSpec] = field(
        default_factory=lambda: [DatasetSpec("polyvore"), DatasetSpec("playlists")])
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)

    def shared(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(RunConfig)}
