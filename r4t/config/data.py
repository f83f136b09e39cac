"""The data stage (jobs/data.yaml): datasets → embeddings → index → the baseline table.

`eval` here is the baseline table's BaselineEvalConfig (`baselines` in the pipeline files).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from r4t.config.common import RunConfig, _require


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
class PrepareConfig(RunConfig):
    """Data → embeddings → index → baseline table (jobs/data.yaml, the first stage of the demo)."""

    eval: BaselineEvalConfig = field(default_factory=BaselineEvalConfig)
