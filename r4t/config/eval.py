"""The evaluation stage (`r4t eval`, jobs/eval.yaml; also what `r4t retrieve` and `r4t serve` read): which methods
are compared, and on what (`eval`, a RetrievalEvalConfig as in the diffusion stage).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from r4t.config.common import RunConfig, _require
from r4t.config.diffusion import RetrievalEvalConfig, SamplerConfig
from r4t.config.policy import PolicyConfig

# The methods of the LM pipeline (what `r4t demo` and `r4t eval` compare by default), and every method.
PIPELINE_METHODS = ("no fan-out", "category-diverse", "MMR", "zero-shot LM", "best-of-N LM", "R4T-FOLM",
                    "R4T-Diffusion")
METHODS = (*PIPELINE_METHODS, "RLlib policy")  # RLlib policy: the LLM-free teacher (python -m r4t.jobs.rllib)
DIFFUSION_AT = "R4T-Diffusion@"  # "R4T-Diffusion@<run>": the denoiser of another diffusion run, e.g. diffusion_rllib


def method_known(name: str) -> bool:
    return name in METHODS or (name.startswith(DIFFUSION_AT) and len(name) > len(DIFFUSION_AT))


@dataclass
class MethodsConfig:
    """Which fan-out methods `r4t eval` compares, and where their artifacts are (under <run_dir>/<dataset>/)."""

    names: list[str] = field(default_factory=lambda: list(PIPELINE_METHODS))
    rl_run: str = "rl"  # R4T-FOLM: the final checkpoint of this RL run; zero-shot and best-of-N use its warm start
    diffusion_run: str = "diffusion"  # R4T-Diffusion: <diffusion_run>/model ("R4T-Diffusion@<run>": <run>/model)
    rllib_run: str = "rllib"  # RLlib policy: <rllib_run>/policy, exported by `python -m r4t.jobs.rllib`
    best_of: int = 4  # N of best-of-N
    mmr_lambda: float = 0.5  # relevance weight of MMR
    mmr_candidates: int = 100
    diverse_candidates: int = 256  # nearest items the category-diverse heuristic chooses from

    def __post_init__(self) -> None:
        unknown = [n for n in self.names if not method_known(n)]
        _require(not unknown and bool(self.names), "methods.names", self.names,
                 f"known methods: {METHODS}, or {DIFFUSION_AT}<diffusion run>")
        _require(self.best_of >= 2, "methods.best_of", self.best_of, "must be at least 2")
        _require(0 <= self.mmr_lambda <= 1, "methods.mmr_lambda", self.mmr_lambda, "must be in [0, 1]")
        _require(self.mmr_candidates >= 1, "methods.mmr_candidates", self.mmr_candidates, "must be positive")
        _require(self.diverse_candidates >= 1, "methods.diverse_candidates", self.diverse_candidates,
                 "must be positive")


@dataclass
class EvalConfig(RunConfig):
    """`r4t eval` (jobs/eval.yaml): every method on a split, quality with intervals and fan-out latency."""

    out: str = "report"  # folder under <run_dir>/ for report.md, metrics.json and the plots
    methods: MethodsConfig = field(default_factory=MethodsConfig)
    eval: RetrievalEvalConfig = field(default_factory=lambda: RetrievalEvalConfig(latency_batches=[1, 8, 1024]))
    policy: PolicyConfig = field(default_factory=PolicyConfig)  # how the LM methods generate
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
