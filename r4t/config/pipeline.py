"""Every stage in one file (jobs/pipeline.yaml, jobs/demo.yaml): each section is the stage's own, under one name
per meaning (`baselines`, `rl_workers`, `synth_workers`, `train_workers`), and the stage configs are cut from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from r4t.config.common import RunConfig, _require
from r4t.config.data import BaselineEvalConfig, PrepareConfig
from r4t.config.diffusion import (
    DiffusionConfig,
    DiffusionTrainSettings,
    ModelSettings,
    RetrievalEvalConfig,
    SamplerConfig,
    TrainWorkersConfig,
)
from r4t.config.eval import EvalConfig, MethodsConfig
from r4t.config.policy import PolicyConfig
from r4t.config.rl import RLConfig, RLSettings, WorkersConfig
from r4t.config.synth import ActorsConfig, SynthConfig, SynthSettings


@dataclass
class PipelineConfig(RunConfig):
    """Every stage in one file: jobs/pipeline.yaml (cluster-sized) and jobs/demo.yaml (the embedded default, sized
    for a 2-core machine), run by `python -m r4t.jobs.pipeline` and `r4t demo`.

    Each section is the section of the same name in that stage's own job file (workers are prefixed by stage)."""

    baselines: BaselineEvalConfig = field(default_factory=BaselineEvalConfig)  # the data stage's baseline table
    policy: PolicyConfig = field(default_factory=PolicyConfig)  # RL, synthesis and the LM methods in eval
    rl: RLSettings = field(default_factory=RLSettings)
    rl_workers: WorkersConfig = field(default_factory=WorkersConfig)
    synth: SynthSettings = field(default_factory=SynthSettings)
    synth_workers: ActorsConfig = field(default_factory=ActorsConfig)
    model: ModelSettings = field(default_factory=ModelSettings)
    train: DiffusionTrainSettings = field(default_factory=DiffusionTrainSettings)
    train_workers: TrainWorkersConfig = field(default_factory=TrainWorkersConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    methods: MethodsConfig = field(default_factory=MethodsConfig)
    eval: RetrievalEvalConfig = field(default_factory=lambda: RetrievalEvalConfig(latency_batches=[1, 8, 1024]))

    def __post_init__(self) -> None:
        _require(self.synth.teacher == self.methods.rl_run, "synth.teacher", self.synth.teacher,
                 f"the demo distills its own RL run: must equal methods.rl_run={self.methods.rl_run!r}")

    def prepare_config(self) -> PrepareConfig:
        return PrepareConfig(**self.shared(), eval=self.baselines)

    def rl_config(self) -> RLConfig:
        # The eval stage scores the warm start (zero-shot LM) and the RL policy (R4T-FOLM) with every other method.
        return RLConfig(**self.shared(), name=self.methods.rl_run, evaluate=False, policy=self.policy, rl=self.rl,
                        workers=self.rl_workers)

    def synth_config(self) -> SynthConfig:
        return SynthConfig(**self.shared(), policy=self.policy, synth=self.synth,
                           workers=self.synth_workers)  # synth.teacher names the RL run (methods.rl_run)

    def diffusion_config(self) -> DiffusionConfig:
        return DiffusionConfig(**self.shared(), name=self.methods.diffusion_run, compare=False, model=self.model,
                               train=self.train, workers=self.train_workers, sampler=self.sampler, policy=self.policy)

    def eval_config(self) -> EvalConfig:
        return EvalConfig(**self.shared(), methods=self.methods, eval=self.eval, policy=self.policy,
                          sampler=self.sampler)
