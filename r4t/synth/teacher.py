"""Teachers: the frozen fan-out policies synthesis distils into the diffusion retriever, behind one interface.

TEACHERS holds one class per kind, keyed by the name users give it:

- "lm": the fan-out LM, trained by `python -m r4t.jobs.rl` (the run's final checkpoint) or any LM policy folder;
- "rllib": the LLM-free teacher, trained by `python -m r4t.jobs.rllib` (the run's exported `policy/`) or such a
  folder (r4t.rl.latent holds its math).

`synth.teacher` names a run under <run_dir>/<dataset>/ or a policy folder. A run says which kind it trains in
teacher.json, written by its job; a run from before that file is told by the layout its job leaves, a folder by its
files. A teacher checks itself against the synthesis config and the catalog, gives the synthesis identity its
fields, and hands SynthWorker a picklable Generation; r4t.retrieve.load turns it into its retrieval method. So
synthesis, retrieval and evaluation never ask which kind a teacher is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from r4t.catalog import PreparedCatalog
from r4t.config import PolicyConfig, SynthConfig
from r4t.errors import ConfigError, DataError
from r4t.io import read_json, sha256_file, write_json
from r4t.policy.backend import SamplingSettings
from r4t.policy.context import resolve
from r4t.policy.engines import make_backend
from r4t.policy.model import INFO_FILE
from r4t.rl.checkpoint import latest_checkpoint
from r4t.rl.latent import CONFIG_FILE as RLLIB_CONFIG
from r4t.rl.latent import WEIGHTS as RLLIB_WEIGHTS
from r4t.rl.latent import LatentPolicy
from r4t.storage import fetch
from r4t.synth.worker import Generation

TEACHER_FILE = "teacher.json"  # in a run folder: {"kind": <a key of TEACHERS>}


class Teacher(ABC):
    """One policy folder of one kind; `run` is the run it is the final policy of (None: a folder given as is)."""

    kind: ClassVar[str]  # the key in TEACHERS, and what a run's teacher.json says
    job: ClassVar[str]  # the module that trains one
    label: ClassVar[str]  # what its runs are called in messages
    artifact: ClassVar[str]  # what a finished run of it holds, in messages
    method: ClassVar[str]  # its name as a retrieval method (methods.names, eval tables)

    def __init__(self, path: Path, run: Path | None = None):
        self.path, self.run = Path(path), run

    @staticmethod
    @abstractmethod
    def holds(folder: Path) -> bool:
        """`folder` is a policy of this kind (by its own files)."""

    @staticmethod
    @abstractmethod
    def laid_out(run: Path) -> bool:
        """`run` has the layout this kind's job leaves: how a run from before teacher.json is recognised."""

    @staticmethod
    @abstractmethod
    def final(run: Path) -> Path | None:
        """The final policy folder of a finished run, else None."""

    @property
    @abstractmethod
    def weights(self) -> Path:
        """The file whose hash identifies the policy."""

    @abstractmethod
    def backend(self, policy: PolicyConfig) -> str:
        """What generates (the synthesis identity's `backend`)."""

    @abstractmethod
    def check(self, cfg: SynthConfig, cat: PreparedCatalog) -> None:
        """Refuse a synthesis the policy was not trained for (ConfigError naming the key, or a manifest mismatch)."""

    @abstractmethod
    def generation(self, cfg: SynthConfig) -> Generation:
        """How SynthWorker actors generate with this policy."""

    @classmethod
    def mark(cls, run: Path) -> None:
        """Record in a run folder that it trains a teacher of this kind (the run's job calls this)."""
        write_json(run / TEACHER_FILE, {"kind": cls.kind})

    @classmethod
    def from_run(cls, run: Path, who: str) -> Teacher:
        """The final policy of a run of this kind; `who` (the key or method asking) heads the error otherwise."""
        folder = cls.final(run)
        if folder is None:
            raise DataError(f"{who}: the {cls.label} run {run} has not finished (no {cls.artifact}); run or resume "
                            f"`python -m {cls.job} name={run.name}` first")
        return cls(folder, run)

    @property
    def policy_hash(self) -> str:
        return sha256_file(self.weights)

    def identity(self, policy: PolicyConfig) -> dict:
        """The synthesis identity's fields for the teacher."""
        return {"teacher": str(self.path), "policy_hash": self.policy_hash, "backend": self.backend(policy)}


class LMTeacher(Teacher):
    """The fan-out LM: completions of K sub-query lines, parsed, embedded and scored."""

    kind, job, label, artifact, method = "lm", "r4t.jobs.rl", "RL", "final checkpoint", "R4T-FOLM"

    @staticmethod
    def holds(folder: Path) -> bool:
        return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()

    @staticmethod
    def laid_out(run: Path) -> bool:
        return any((run / "checkpoints").glob("step-*"))

    @staticmethod
    def final(run: Path) -> Path | None:
        last = latest_checkpoint(fetch(run / "checkpoints").parent)
        return last if last is not None and read_json(last / INFO_FILE).get("final") else None

    @property
    def weights(self) -> Path:
        return self.path / "model.safetensors"

    def backend(self, policy: PolicyConfig) -> str:
        return policy.backend

    def check(self, cfg: SynthConfig, cat: PreparedCatalog) -> None:
        """A policy trained by an RL run is prompted as it was trained."""
        if self.run is None:
            return
        trained = read_json(self.run / "config.json")["policy"]
        for key in ("template", "context_items", "max_new_tokens"):
            if trained.get(key, getattr(PolicyConfig(), key)) != getattr(cfg.policy, key):
                raise ConfigError(f"policy.{key}={getattr(cfg.policy, key)!r}: the teacher {self.run} was trained "
                                  f"with {trained.get(key)!r}; use the same")

    def generation(self, cfg: SynthConfig) -> LMGeneration:
        return LMGeneration(str(self.path.resolve()), cfg.policy.backend, cfg.policy.device,
                            cfg.policy.max_new_tokens)


@dataclass(frozen=True)
class LMGeneration(Generation):
    backend: str
    device: str
    max_new_tokens: int

    def load(self):
        return make_backend(self.backend, str(fetch(self.policy_path)), self.device)

    def scored(self, policy, shard, query_emb, references, scorer, settings) -> dict:
        s, completions = settings, []
        for j, start in enumerate(range(0, len(shard.queries), s.prompts_per_call)):
            prompts, listed = (shard.prompts[start:start + s.prompts_per_call],
                               shard.listed[start:start + s.prompts_per_call])
            sampling = SamplingSettings(n=s.samples, temperature=s.temperature, top_p=s.top_p,
                                        max_new_tokens=self.max_new_tokens, seed=shard.seed * 1000 + j, logprobs=False)
            completions += [resolve(r.text, listed[r.prompt_index]) for r in policy.generate(prompts, sampling)]
        queries = [q for q in shard.queries for _ in range(s.samples)]
        return scorer.score(queries, completions, references, embeddings=True)


class RLlibTeacher(Teacher):
    """The LLM-free teacher: k rows in embedding space per sample of its Gaussian, no text."""

    kind, job, label, artifact, method = "rllib", "r4t.jobs.rllib", "RLlib", "final exported policy", "RLlib policy"

    @staticmethod
    def holds(folder: Path) -> bool:
        return (folder / RLLIB_CONFIG).is_file()

    @staticmethod
    def laid_out(run: Path) -> bool:
        return (run / "policy" / RLLIB_CONFIG).is_file() or any((run / "checkpoints").glob("iter-*"))

    @staticmethod
    def final(run: Path) -> Path | None:
        folder = fetch(run / "policy")
        done = (folder / RLLIB_CONFIG).is_file() and read_json(folder / RLLIB_CONFIG)["manifest"].get("final")
        return folder if done else None

    @property
    def weights(self) -> Path:
        return self.path / RLLIB_WEIGHTS

    def backend(self, policy: PolicyConfig) -> str:
        return "latent"  # the name synthesis identities have always recorded, so their folders stay resumable

    def check(self, cfg: SynthConfig, cat: PreparedCatalog) -> None:
        """Trained on this catalog, encoder and dimension, and emitting reward.k rows."""
        k = LatentPolicy.load(self.path, cat.fingerprint).info.k
        if k != cfg.reward.k:
            raise ConfigError(f"reward.k={cfg.reward.k}: the RLlib teacher {self.path} emits k={k} rows")

    def generation(self, cfg: SynthConfig) -> RLlibGeneration:
        return RLlibGeneration(str(self.path.resolve()))


@dataclass(frozen=True)
class RLlibGeneration(Generation):
    def load(self):
        return LatentPolicy.load(fetch(self.policy_path))  # RLlibTeacher.check compared it with the catalog

    def scored(self, policy, shard, query_emb, references, scorer, settings) -> dict:
        """A fan-out is one draw of the policy's Gaussian (settings.temperature scales its std)."""
        q = np.repeat(query_emb, settings.samples, axis=0)
        rows = policy.rows(q, sample=True, temperature=settings.temperature, seed=shard.seed)
        return {**scorer.score_embeddings(q, rows, references), "malformed": np.zeros(len(q), bool),
                "subquery_emb": rows, "subqueries": [[]] * len(q)}


TEACHERS: dict[str, type[Teacher]] = {t.kind: t for t in (LMTeacher, RLlibTeacher)}


def run_kind(run: Path) -> str | None:
    """The kind of teacher a run folder trains: its teacher.json, else the kind whose layout it has; None when it
    is no teacher's run."""
    marker = run / TEACHER_FILE
    if marker.is_file():
        kind = read_json(marker).get("kind")
        if kind not in TEACHERS:
            raise DataError(f"{marker}: kind={kind!r} is no teacher; known: {', '.join(TEACHERS)}")
        return kind
    return next((kind for kind, t in TEACHERS.items() if t.laid_out(run)), None)


def teacher_at(folder: Path) -> Teacher | None:
    """The teacher whose policy `folder` is (a folder given as is, or one a synthesis identity names)."""
    return next((t(folder) for t in TEACHERS.values() if t.holds(folder)), None)


def resolve_teacher(name: str, root: Path) -> Teacher:
    """synth.teacher: a run under `root` (it must have finished), or a policy folder of any kind."""
    who, run = f"synth.teacher={name!r}", root / name
    kind = run_kind(run)
    if kind is not None:
        return TEACHERS[kind].from_run(run, who)
    teacher = teacher_at(Path(name))
    if teacher is None:
        raise ConfigError(f"{who}: neither a run under {root} ("
                          f"{', '.join(f'python -m {t.job}' for t in TEACHERS.values())}) nor a policy folder")
    return teacher
