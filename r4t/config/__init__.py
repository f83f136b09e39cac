"""Typed config schemas, one module per stage, loaded from YAML with OmegaConf and overridden by dotted keys.

    cfg = load_config(PrepareConfig, "jobs/data.yaml", ["index.factory=IVF256,Flat"])

The modules follow the pipeline, and each imports only the ones before it:

    common     RunConfig and what every stage shares: datasets, embed, index, reward; the value checks
    data       PrepareConfig (jobs/data.yaml) and its baseline table
    policy     PolicyConfig, BootstrapConfig: the fan-out LM of every LM stage
    rl         RLConfig (jobs/rl.yaml): Soft-GRPO and its Ray actors
    rllib      RLlibConfig (jobs/rllib.yaml): the LLM-free teacher
    synth      SynthConfig (jobs/synth.yaml)
    diffusion  DiffusionConfig (jobs/diffusion.yaml), SamplerConfig, RetrievalEvalConfig
    eval       EvalConfig (jobs/eval.yaml), MethodsConfig and the method names
    pipeline   PipelineConfig (jobs/pipeline.yaml, jobs/demo.yaml): every stage's section in one file
    loading    load_config, to_dict

A key means one thing in every job file, with three exceptions, each a section whose schema is the stage's own:

    eval     data: BaselineEvalConfig (the baseline table) | rl: PolicyEvalConfig (warm start vs RL policy)
             | rllib: LatentEvalConfig (policy vs zero and random actions)
             | diffusion, eval, pipeline: RetrievalEvalConfig (every method's returned sets)
    workers  rl: WorkersConfig (rollout, reward, learner actors) | synth: ActorsConfig (a pool of SynthWorkers)
             | diffusion: TrainWorkersConfig (Ray Train's DDP workers)
    rl       rl: RLSettings (Soft-GRPO on the LM) | rllib: RLlibSettings (PPO in embedding space)

The pipeline files hold several stages at once, so there each of these has a name of its own: `baselines`,
`rl_workers`, `synth_workers`, `train_workers` (and `eval` is RetrievalEvalConfig).

Everything public is importable from r4t.config itself.
"""

from r4t.config.common import (BUILTIN_DATASETS, DATASET_FORMATS, DatasetSpec, EmbedConfig, IndexConfig,
                               RewardConfig, RunConfig)
from r4t.config.data import BaselineEvalConfig, PrepareConfig
from r4t.config.diffusion import (SAMPLERS, DiffusionConfig, DiffusionTrainSettings, ModelSettings,
                                  RetrievalEvalConfig, SamplerConfig, TrainWorkersConfig)
from r4t.config.eval import DIFFUSION_AT, METHODS, PIPELINE_METHODS, EvalConfig, MethodsConfig, method_known
from r4t.config.loading import load_config, to_dict
from r4t.config.pipeline import PipelineConfig
from r4t.config.policy import BootstrapConfig, PolicyConfig
from r4t.config.rl import PolicyEvalConfig, RLConfig, RLSettings, WorkersConfig
from r4t.config.rllib import (LATENT_BASES, EnvRunnersConfig, LatentActionConfig, LatentEvalConfig, RLlibConfig,
                              RLlibSettings)
from r4t.config.synth import ActorsConfig, SynthConfig, SynthSettings

__all__ = [
    "BUILTIN_DATASETS", "DATASET_FORMATS", "DIFFUSION_AT", "LATENT_BASES", "METHODS", "PIPELINE_METHODS", "SAMPLERS",
    "ActorsConfig", "BaselineEvalConfig", "BootstrapConfig", "DatasetSpec", "DiffusionConfig",
    "DiffusionTrainSettings", "EmbedConfig", "EnvRunnersConfig", "EvalConfig", "IndexConfig", "LatentActionConfig",
    "LatentEvalConfig", "MethodsConfig", "ModelSettings", "PipelineConfig", "PolicyConfig", "PolicyEvalConfig",
    "PrepareConfig", "RLConfig", "RLSettings", "RLlibConfig", "RLlibSettings", "RetrievalEvalConfig", "RewardConfig",
    "RunConfig", "SamplerConfig", "SynthConfig", "SynthSettings", "TrainWorkersConfig", "WorkersConfig", "load_config",
    "method_known", "to_dict",
]
