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

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from r4t.errors import ConfigError

BUILTIN_DATASETS = ("polyvore", "playlists")
SAMPLERS = ("euler", "heun", "sde")
DATASET_FORMATS = ("builtin", "r4t", "maryland", "polyvore_outfits", "mpd", "fashion_jsonl", "playlists_jsonl")


def _require(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {why}")


def _check_resources(key: str, resources: dict) -> None:
    reserved = {"CPU", "GPU", "memory", "object_store_memory"} & set(resources)
    _require(not reserved, key, dict(resources), f"{sorted(reserved)} are set by the cpus/gpus keys, not here")
    _require(all(v > 0 for v in resources.values()), key, dict(resources), "amounts must be positive")


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


@dataclass
class PrepareConfig(RunConfig):
    """Data → embeddings → index → baseline table (jobs/data.yaml, the first stage of the demo)."""

    eval: BaselineEvalConfig = field(default_factory=BaselineEvalConfig)


@dataclass
class BootstrapConfig:
    """The tiny policy built here when no checkpoint is given (policy.init=bootstrap)."""

    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    max_positions: int = 512
    sft_epochs: int = 10
    sft_lr: float = 3e-3
    sft_batch_size: int = 32

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                     "max_positions", "sft_epochs", "sft_batch_size"):
            _require(getattr(self, name) > 0, f"policy.bootstrap.{name}", getattr(self, name), "must be positive")
        _require(self.hidden_size % self.num_heads == 0, "policy.bootstrap.hidden_size", self.hidden_size,
                 f"must be a multiple of num_heads={self.num_heads}")
        _require(self.num_heads % self.num_kv_heads == 0, "policy.bootstrap.num_kv_heads", self.num_kv_heads,
                 f"must divide num_heads={self.num_heads}")
        _require(self.sft_lr > 0, "policy.bootstrap.sft_lr", self.sft_lr, "must be positive")


@dataclass
class PolicyConfig:
    init: str = "bootstrap"  # "bootstrap" (tiny LM built and warm-started here) or a Hugging Face model folder
    backend: str = "transformers"  # transformers | vllm
    device: str = "cpu"
    # str.format pattern with {query} (and {k}, {context}); without items listed: "query: {query}\nsub-queries:\n"
    template: str = ("catalog items near the query:\n{context}\nquery: {query}\n"
                     "{k} sub-queries, one per line ([n] names a listed item):\n")
    context_items: int = 16  # catalog items nearest the query listed, numbered, in the prompt as {context}; 0 = none
    context_per_category: int = 1  # listed items of one category before the nearest of the rest (0 = no cap)
    max_new_tokens: int = 96
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)

    def __post_init__(self) -> None:
        _require(self.backend in ("transformers", "vllm"), "policy.backend", self.backend,
                 "must be transformers or vllm")
        _require("{query}" in self.template, "policy.template", self.template, "must contain {query}")
        _require(self.context_items >= 0, "policy.context_items", self.context_items, "must be >= 0")
        _require(self.context_per_category >= 0, "policy.context_per_category", self.context_per_category,
                 "must be >= 0")
        _require(("{context}" in self.template) == (self.context_items > 0), "policy.template", self.template,
                 f"must contain {{context}} exactly when policy.context_items > 0 (it is {self.context_items})")
        _require(self.max_new_tokens > 0, "policy.max_new_tokens", self.max_new_tokens, "must be positive")


@dataclass
class RLSettings:
    task: str = "oar"  # oar: composite reward on OAR queries | wscr: coverage of the training reference sets
    steps: int = 60
    prompts_per_step: int = 8
    group_size: int = 8  # G samples per prompt
    chunk_prompts: int = 4  # prompts per rollout call: scoring one chunk overlaps generating the next
    temperature: float = 1.0
    top_p: float = 1.0
    lr: float = 1e-4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    advantage: str = "grpo"  # grpo (std-normalized) | grpo_no_std
    loss: str = "soft_grpo"  # soft_grpo | grpo_kl (k3 reverse KL to the frozen initial policy)
    clip_eps: float = 0.2  # <= 0: unclipped ratio
    beta1: float = 0.05  # Soft-GRPO: importance-weighted reverse KL to the sampling policy
    beta2: float = 0.05  # Soft-GRPO: forward KL to the sampling policy (-log pi_theta)
    kl_beta: float = 0.05  # grpo_kl: weight of the k3 KL to the reference
    aggregation: str = "sequence"  # sequence (mean per completion, then over completions) | token
    # Each rollout batch gives minibatches x epochs optimizer steps: `epochs` passes over the batch, each split into
    # `minibatches` minibatches of whole prompt groups in a seeded random order. Only the first step sees
    # rho = pi_theta / pi_old = 1; with one step in all the clip never acts and the beta1 and beta2 gradients
    # cancel (beta1 = beta2), which leaves group-normalized REINFORCE. jobs/*.yaml use 4 x 2 (measured on
    # polyvore: higher reward than 1 x 1 for ~1.6x the learner's time).
    minibatches: int = 1
    epochs: int = 1
    # Dtypes: the learner loads the policy in float32 and scores log pi_theta in float32. log pi_old comes from
    # the sampler: float32 with the transformers backend and with vLLM on CPU, the checkpoint's dtype (bfloat16
    # for Qwen3 / Gemma3) with vLLM on GPU, where rho starts off 1 by bf16 rounding (vLLM in bfloat16 on the tiny
    # policies here: mean |log rho| 4e-3 to 1e-2, up to ~0.1 a token, inside clip_eps; the learner scoring in
    # bfloat16 too barely narrows it, the engines round differently, so the learner stays float32).
    # metrics.jsonl shows it as ratio_first / abs_log_ratio_first (float32 on both sides: < 1e-4).
    checkpoint_every: int = 20
    timeout_s: float = 900.0  # every remote call; a stuck actor becomes an error naming it and the step

    def __post_init__(self) -> None:
        _require(self.task in ("oar", "wscr"), "rl.task", self.task, "must be oar or wscr")
        for name in ("steps", "prompts_per_step", "chunk_prompts", "minibatches", "epochs", "checkpoint_every"):
            _require(getattr(self, name) > 0, f"rl.{name}", getattr(self, name), "must be positive")
        _require(self.group_size >= 2, "rl.group_size", self.group_size, "must be at least 2 (group-normalized)")
        _require(self.prompts_per_step % self.minibatches == 0, "rl.minibatches", self.minibatches,
                 f"must divide prompts_per_step={self.prompts_per_step} (minibatches hold whole prompt groups)")
        _require(self.temperature > 0, "rl.temperature", self.temperature, "must be positive")
        _require(0 < self.top_p <= 1, "rl.top_p", self.top_p, "must be in (0, 1]")
        _require(self.lr > 0, "rl.lr", self.lr, "must be positive")
        _require(self.aggregation in ("token", "sequence"), "rl.aggregation", self.aggregation,
                 "must be token or sequence")
        for name in ("beta1", "beta2", "kl_beta", "weight_decay"):
            _require(getattr(self, name) >= 0, f"rl.{name}", getattr(self, name), "must be non-negative")
        _require(self.timeout_s > 0, "rl.timeout_s", self.timeout_s, "must be positive")


@dataclass
class WorkersConfig:
    """Ray actors of the RL loop. CPUs are Ray's logical resources; torch_threads caps each actor's threads."""

    rollout: int = 1
    reward: int = 1
    rollout_cpus: float = 1.0
    reward_cpus: float = 1.0
    learner_cpus: float = 0.0  # the learner runs while rollout workers wait for it
    rollout_gpus: float = 0.0
    learner_gpus: float = 0.0
    torch_threads: int = 1  # per rollout and reward worker
    learner_threads: int = 2  # the learner computes while the others wait, so it may use every core
    # Custom Ray resources each reward worker needs, e.g. {scoring: 1}: the resource only a CPU worker group
    # advertises, so reward scoring runs there and not beside the GPUs.
    reward_resources: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_resources("workers.reward_resources", self.reward_resources)
        for name in ("rollout", "reward", "torch_threads", "learner_threads"):
            _require(getattr(self, name) >= 1, f"workers.{name}", getattr(self, name), "must be at least 1")
        for name in ("rollout_cpus", "reward_cpus", "learner_cpus", "rollout_gpus", "learner_gpus"):
            _require(getattr(self, name) >= 0, f"workers.{name}", getattr(self, name), "must be non-negative")


@dataclass
class PolicyEvalConfig:
    split: str = "test"
    max_queries: int = 0  # 0 = all
    samples: int = 1  # fan-outs per query, each scored
    temperature: float = 1.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        _require(self.split in ("train", "val", "test"), "eval.split", self.split, "must be train, val or test")
        _require(self.samples >= 1, "eval.samples", self.samples, "must be at least 1")
        _require(self.temperature >= 0, "eval.temperature", self.temperature, "must be >= 0 (0 = greedy)")


@dataclass
class RLConfig(RunConfig):
    """Stage 1 (jobs/rl.yaml): bootstrap or load a policy, then Soft-GRPO on Ray actors, per dataset."""

    name: str = "rl"  # output folder under <run_dir>/<dataset>/, so ablations sit side by side
    resume: bool = True  # continue from the last checkpoint of this run when there is one
    evaluate: bool = True  # then score the warm start and the RL policy on held-out queries (eval.md)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    rl: RLSettings = field(default_factory=RLSettings)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    eval: PolicyEvalConfig = field(default_factory=PolicyEvalConfig)


LATENT_BASES = ("pca", "identity")


@dataclass
class LatentActionConfig:
    """How the latent policy's action becomes k rows in embedding space (r4t.rl.latent):
    row_i = normalize(q + scale * (clip(a_i + o_i, -1, 1) @ B) / sqrt(rank)), a_i in [-1, 1]^rank, B [rank, d]
    orthonormal rows, o_i fixed offsets. With offset 0 the zero action puts every row on the query (no fan-out);
    the basis keeps the action small."""

    basis: str = "pca"  # pca: top `rank` principal directions of the item embeddings | identity: rank = d, B = I
    rank: int = 16  # basis directions per row (ignored by identity)
    scale: float = 1.0  # largest residual norm a row can take from the query (at a corner of the action box)
    offset: float = 1.0  # fixed per-row offsets uniform in [-offset, offset] (seeded): start the k rows apart

    def __post_init__(self) -> None:
        _require(self.basis in LATENT_BASES, "action.basis", self.basis, f"must be one of {LATENT_BASES}")
        _require(self.rank >= 1, "action.rank", self.rank, "must be at least 1")
        _require(self.scale > 0, "action.scale", self.scale, "must be positive")
        _require(0 <= self.offset <= 1, "action.offset", self.offset, "must be in [0, 1]")


@dataclass
class RLlibSettings:
    """PPO (RLlib, new API stack) on the latent fan-out environment: one query per episode (a contextual bandit)."""

    task: str = "oar"  # oar: composite reward on OAR training queries | wscr: coverage of the training reference sets
    algorithm: str = "ppo"  # only PPO is wired up
    iterations: int = 40  # algo.train() calls
    train_batch_size: int = 2000  # env steps (= episodes) per iteration
    minibatch_size: int = 250
    num_epochs: int = 6  # SGD passes over each batch
    lr: float = 1e-3
    entropy_coeff: float = 0.0
    clip_param: float = 0.2
    vf_loss_coeff: float = 1.0
    hidden: list[int] = field(default_factory=lambda: [256, 256])  # actor and critic MLPs
    activation: str = "tanh"  # tanh | relu
    checkpoint_every: int = 10  # iterations; the last iteration is always saved
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        _require(self.task in ("oar", "wscr"), "rl.task", self.task, "must be oar or wscr")
        _require(self.algorithm == "ppo", "rl.algorithm", self.algorithm, "only ppo is supported")
        for name in ("iterations", "train_batch_size", "minibatch_size", "num_epochs", "checkpoint_every",
                     "keep_checkpoints"):
            _require(getattr(self, name) >= 1, f"rl.{name}", getattr(self, name), "must be at least 1")
        _require(self.minibatch_size <= self.train_batch_size, "rl.minibatch_size", self.minibatch_size,
                 f"must be <= rl.train_batch_size={self.train_batch_size}")
        _require(self.lr > 0, "rl.lr", self.lr, "must be positive")
        _require(self.entropy_coeff >= 0, "rl.entropy_coeff", self.entropy_coeff, "must be >= 0")
        _require(self.clip_param > 0, "rl.clip_param", self.clip_param, "must be positive")
        _require(bool(self.hidden) and all(h >= 1 for h in self.hidden), "rl.hidden", self.hidden,
                 "must be a non-empty list of positive layer sizes")
        _require(self.activation in ("tanh", "relu"), "rl.activation", self.activation, "must be tanh or relu")


@dataclass
class EnvRunnersConfig:
    """RLlib EnvRunner actors (sampling); the learner runs in the driver process (num_learners=0)."""

    count: int = 1  # EnvRunner actors; 0 samples in the driver
    cpus: float = 1.0  # per EnvRunner
    envs_per_runner: int = 32  # vectorized environments per EnvRunner (one batched policy call for all of them)
    batched: bool = True  # score the runner's envs in one RewardScorer call (LatentFanoutVectorEnv); false: one each
    sample_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        _require(self.count >= 0, "env_runners.count", self.count, "must be >= 0")
        _require(self.cpus >= 0, "env_runners.cpus", self.cpus, "must be >= 0")
        _require(self.envs_per_runner >= 1, "env_runners.envs_per_runner", self.envs_per_runner, "must be >= 1")
        _require(self.sample_timeout_s > 0, "env_runners.sample_timeout_s", self.sample_timeout_s, "must be > 0")


@dataclass
class LatentEvalConfig:
    split: str = "test"  # held-out queries of rl.task: the trained policy vs the zero action vs random actions
    max_queries: int = 0  # 0 = all

    def __post_init__(self) -> None:
        _require(self.split in ("train", "val", "test"), "eval.split", self.split, "must be train, val or test")
        _require(self.max_queries >= 0, "eval.max_queries", self.max_queries, "must be >= 0")


@dataclass
class RLlibConfig(RunConfig):
    """The LLM-free teacher (jobs/rllib.yaml): a fan-out policy acting in embedding space, trained with RLlib."""

    name: str = "rllib"  # output folder <run_dir>/<dataset>/<name>/
    resume: bool = True  # continue from the last checkpoint of this run when there is one
    evaluate: bool = True  # then score the policy, the zero action and random actions on eval.split
    rl: RLlibSettings = field(default_factory=RLlibSettings)
    action: LatentActionConfig = field(default_factory=LatentActionConfig)
    env_runners: EnvRunnersConfig = field(default_factory=EnvRunnersConfig)
    eval: LatentEvalConfig = field(default_factory=LatentEvalConfig)


@dataclass
class SynthSettings:
    teacher: str = "rl"  # an RL run under <run_dir>/<dataset>/ (its final checkpoint), an RLlib run, or a folder
    task: str = "oar"  # oar: rows = embeddings of the retrieved items | wscr: rows = sub-query embeddings
    splits: list[str] = field(default_factory=lambda: ["train", "val"])
    samples: int = 16  # fan-outs per query (the paper: 128)
    keep_top: int = 0  # keep the best N well-formed samples per query by reward; 0 = all of them
    rows: int = 10  # L, rows per target set
    queries_per_shard: int = 16  # a shard is the unit of work and of resume
    max_queries: int = 0  # per split; 0 = all
    prompts_per_call: int = 4  # prompts per generate call (x samples sequences)
    temperature: float = 1.0
    top_p: float = 1.0
    timeout_s: float = 1800.0  # per shard

    def __post_init__(self) -> None:
        _require(self.task in ("oar", "wscr"), "synth.task", self.task, "must be oar or wscr")
        _require(bool(self.splits) and all(s in ("train", "val", "test") for s in self.splits), "synth.splits",
                 self.splits, "must be a non-empty list of train, val, test")
        for name in ("samples", "rows", "queries_per_shard", "prompts_per_call"):
            _require(getattr(self, name) >= 1, f"synth.{name}", getattr(self, name), "must be at least 1")
        _require(0 <= self.keep_top <= self.samples, "synth.keep_top", self.keep_top,
                 f"must be in [0, synth.samples={self.samples}]")
        _require(self.max_queries >= 0, "synth.max_queries", self.max_queries, "must be >= 0")
        _require(self.temperature > 0, "synth.temperature", self.temperature, "must be positive")
        _require(0 < self.top_p <= 1, "synth.top_p", self.top_p, "must be in (0, 1]")
        _require(self.timeout_s > 0, "synth.timeout_s", self.timeout_s, "must be positive")


@dataclass
class ActorsConfig:
    """A pool of identical Ray actors (synthesis workers)."""

    count: int = 2
    cpus: float = 1.0
    gpus: float = 0.0
    torch_threads: int = 1
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per actor, e.g. {gpu_group: 1}

    def __post_init__(self) -> None:
        _check_resources("workers.resources", self.resources)
        _require(self.count >= 1, "workers.count", self.count, "must be at least 1")
        _require(self.torch_threads >= 1, "workers.torch_threads", self.torch_threads, "must be at least 1")
        for name in ("cpus", "gpus"):
            _require(getattr(self, name) >= 0, f"workers.{name}", getattr(self, name), "must be non-negative")


@dataclass
class SynthConfig(RunConfig):
    """Stage 2 (jobs/synth.yaml): the frozen policy writes target sets for the diffusion retriever."""

    name: str = "synth"  # output folder <run_dir>/<dataset>/<name>/
    policy: PolicyConfig = field(default_factory=PolicyConfig)  # backend, device, template (init: unused)
    synth: SynthSettings = field(default_factory=SynthSettings)
    workers: ActorsConfig = field(default_factory=ActorsConfig)

    def __post_init__(self) -> None:
        _require(self.synth.task == "oar" or self.synth.rows >= self.reward.k, "synth.rows", self.synth.rows,
                 f"WSCR targets are the k={self.reward.k} sub-query embeddings: rows must be >= reward.k")


@dataclass
class SamplerConfig:
    """How the diffusion retriever samples (r4t.diffusion.samplers)."""

    # Defaults measured here (scripts/sampler_sweep.py, validation split, BENCHMARKS.md): one Euler step scores no
    # lower on the judge than 256 (Euler, Heun or SDE) and returns 98% (polyvore) / 87% (playlists) of their items,
    # so one network evaluation is the default; guidance (the paper: 0.1) changed no metric beyond its interval.
    method: str = "euler"
    steps: int = 1
    # Inside what training covers (train.sigma_min/max). The paper's [1e-4, 80] is EDM's range for data of scale
    # 0.5; unit-norm rows of d=384 have sigma_data ~0.05, and sigma = 2 already buries a row (noise norm ~39).
    sigma_min: float = 2e-3
    sigma_max: float = 2.0
    rho: float = 7.0  # EDM's time-discretization exponent
    guidance: float = 0.0  # CFG strength w: D = D_cond + w (D_cond - D_null)
    churn: float = 0.0  # Heun only: EDM S_churn (0 = deterministic)
    churn_min: float = 0.0  # churn applies for sigma in [churn_min, churn_max]
    churn_max: float = 1e9
    s_noise: float = 1.0
    device: str = "cpu"  # where the denoiser runs when retrieving (cpu, cuda, cuda:1, ...)

    def __post_init__(self) -> None:
        _require(self.method in SAMPLERS, "sampler.method", self.method, f"unknown; known: {SAMPLERS}")
        _require(self.steps >= 1, "sampler.steps", self.steps, "must be at least 1")
        _require(0 < self.sigma_min < self.sigma_max, "sampler.sigma_min", self.sigma_min,
                 f"need 0 < sigma_min < sigma_max={self.sigma_max}")
        _require(self.guidance >= 0, "sampler.guidance", self.guidance, "must be >= 0")
        _require(self.churn >= 0, "sampler.churn", self.churn, "must be >= 0")


@dataclass
class ModelSettings:
    """The set denoiser: a preset (small: CPU demo; paper: the paper's 53.9M at d=128), any field overridable."""

    preset: str = "small"
    rows: Optional[int] = None  # L; must equal the targets' L
    hidden: Optional[int] = None
    mlp: Optional[int] = None
    heads: Optional[int] = None
    layers: Optional[int] = None
    # The condition: the query and its C nearest catalog items (r4t.policy.context, the items an LM teacher's
    # prompt lists), at most `context_per_category` per category first; 0 items: the query alone.
    context_items: int = 16
    context_per_category: int = 1
    # Rows carry a learned slot each and the targets are ordered (context items by their place in the list):
    # a row no longer has to agree with nine others on which item it takes (r4t.diffusion.denoiser).
    row_slots: bool = True

    def __post_init__(self) -> None:
        _require(self.context_items >= 0, "model.context_items", self.context_items, "must be >= 0")
        _require(self.context_per_category >= 0, "model.context_per_category", self.context_per_category,
                 "must be >= 0")


@dataclass
class DiffusionTrainSettings:
    steps: int = 3000
    batch_size: int = 256  # global: split over the workers
    lr: float = 1e-3
    warmup_steps: int = 200
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    ema_decay: float = 0.999
    cond_drop: float = 0.1  # condition replaced by the learned null vector (classifier-free guidance)
    p_mean: float = -0.5  # ln(sigma / sigma_data) ~ N(p_mean, p_std^2) in training (EDM's -1.2 at sigma_data 0.5)
    p_std: float = 1.2
    # A share of the noise levels log-uniform over [sigma_min, sigma_max], so that training covers the
    # sampler's range (sampler.sigma_min/max must lie inside; checked when a model is loaded for sampling).
    sigma_uniform: float = 0.5
    sigma_min: float = 2e-3
    sigma_max: float = 2.0
    shuffle_buffer: int = 2048  # rows in each worker's local shuffle buffer
    materialize: bool = True  # hold the targets in the object store (fast epochs); off when they do not fit
    log_every: int = 50
    checkpoint_every: int = 500
    eval_sets: int = 512  # fixed (noise, sigma) draws for the comparable loss logged with each checkpoint

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "eval_sets"):
            _require(getattr(self, name) >= 1, f"train.{name}", getattr(self, name), "must be at least 1")
        _require(self.lr > 0, "train.lr", self.lr, "must be positive")
        _require(self.warmup_steps >= 0, "train.warmup_steps", self.warmup_steps, "must be >= 0")
        _require(0 <= self.ema_decay < 1, "train.ema_decay", self.ema_decay, "must be in [0, 1)")
        _require(0 <= self.cond_drop < 1, "train.cond_drop", self.cond_drop, "must be in [0, 1)")
        _require(self.p_std > 0, "train.p_std", self.p_std, "must be positive")
        _require(0 <= self.sigma_uniform <= 1, "train.sigma_uniform", self.sigma_uniform, "must be in [0, 1]")
        _require(0 < self.sigma_min < self.sigma_max, "train.sigma_min", self.sigma_min,
                 f"need 0 < sigma_min < sigma_max={self.sigma_max}")


@dataclass
class TrainWorkersConfig:
    """Ray Train: DDP workers (gloo on CPU, NCCL on GPU)."""

    count: int = 2
    cpus: float = 0.5  # Ray Data needs a CPU left over to read the targets
    use_gpu: bool = False
    torch_threads: int = 1

    def __post_init__(self) -> None:
        _require(self.count >= 1, "workers.count", self.count, "must be at least 1")
        _require(self.cpus > 0, "workers.cpus", self.cpus, "must be positive")
        _require(self.torch_threads >= 1, "workers.torch_threads", self.torch_threads, "must be at least 1")


@dataclass
class RetrievalEvalConfig:
    """Held-out comparison of fan-out methods on returned sets of k items."""

    split: str = "test"
    max_queries: int = 0  # per task; 0 = all
    k: int = 10  # items per returned set
    lm_temperature: float = 1.0  # the LM methods sample one fan-out per query
    latency_batches: list[int] = field(default_factory=lambda: [8, 1024])
    latency_repeats: int = 3
    judge: bool = True  # the independent judge (r4t.eval.judge; needs the extra r4t[judge]) on OAR intents
    judge_reference: int = 512  # random catalog items each query's relevance percentile is taken among
    handwritten: bool = True  # also the built-in datasets' hand-written out-of-template intents (evaluation only)

    def __post_init__(self) -> None:
        _require(self.split in ("train", "val", "test"), "eval.split", self.split, "must be train, val or test")
        _require(self.judge_reference >= 2, "eval.judge_reference", self.judge_reference, "must be at least 2")
        _require(self.k >= 2, "eval.k", self.k, "must be at least 2")
        _require(self.max_queries >= 0, "eval.max_queries", self.max_queries, "must be >= 0")
        _require(all(b >= 1 for b in self.latency_batches), "eval.latency_batches", self.latency_batches,
                 "must be positive batch sizes")
        _require(self.latency_repeats >= 1, "eval.latency_repeats", self.latency_repeats, "must be at least 1")


@dataclass
class DiffusionConfig(RunConfig):
    """Stage 3 (jobs/diffusion.yaml): Ray Train fits the set denoiser on the synthesized targets, per dataset."""

    name: str = "diffusion"  # output folder <run_dir>/<dataset>/<name>/
    targets: str = "synth"  # a synthesis run under <run_dir>/<dataset>/, or a folder with its manifest
    resume: bool = True
    compare: bool = True  # after training, compare with no fan-out and the teacher (`r4t eval` does every method)
    model: ModelSettings = field(default_factory=ModelSettings)
    train: DiffusionTrainSettings = field(default_factory=DiffusionTrainSettings)
    workers: TrainWorkersConfig = field(default_factory=TrainWorkersConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)  # how the teacher (R4T-FOLM) generates in eval
    eval: RetrievalEvalConfig = field(default_factory=RetrievalEvalConfig)


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


T = TypeVar("T")


def _describe(e: OmegaConfBaseException) -> str:
    msg = (getattr(e, "msg", None) or str(e) or type(e).__name__).splitlines()[0]
    key = getattr(e, "full_key", None)
    return f"key '{key}': {msg}" if key else msg


def _file_layers(path: Path, below: tuple[Path, ...] = ()) -> list[tuple[Path, DictConfig]]:
    """A job file and the files it builds on, base first: `base: other.yaml` (relative to the file) makes the file
    state only what differs from the other, so the two cannot drift apart."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.resolve() in below:
        raise ConfigError(f"{path}: `base` comes back to this file ({' -> '.join(str(p) for p in below)})")
    try:
        raw = OmegaConf.load(path)
    except Exception as e:  # YAML syntax errors come from the yaml parser
        raise ConfigError(f"{path}: cannot parse YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, DictConfig):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not a {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return [(path, raw)]
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: {base!r} must be the path of another job file")
    return _file_layers(path.parent / base, (*below, path.resolve())) + [(path, raw)]


def _empty_mappings(node: DictConfig, prefix: str = "") -> list[str]:
    """Dotted keys of a YAML layer whose value is an empty mapping."""
    out = []
    for key, value in node.items_ex(resolve=False):
        if isinstance(value, DictConfig):
            out += [f"{prefix}{key}"] if len(value) == 0 else _empty_mappings(value, f"{prefix}{key}.")
    return out


def load_config(schema: type[T], path: str | os.PathLike | None = None, overrides: list[str] = ()) -> T:
    """Schema defaults ← YAML file ← dotted overrides, checked at each step; returns a schema instance."""
    cfg = OmegaConf.structured(schema)
    for file, layer in _file_layers(Path(path)) if path is not None else []:
        try:
            cfg = OmegaConf.merge(cfg, layer)
            for key in _empty_mappings(layer):  # `{}` over a base's mapping empties it (a merge would keep it)
                OmegaConf.update(cfg, key, {}, merge=False)
        except OmegaConfBaseException as e:
            raise ConfigError(f"{file}: {_describe(e)}") from None
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
