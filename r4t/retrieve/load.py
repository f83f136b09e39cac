"""Every fan-out method by name, built from the artifacts the stages wrote under <run_dir>/<dataset>/.

A method whose artifact is missing is an error that names the stage to run.
"""

from __future__ import annotations

from pathlib import Path

from r4t.catalog import PreparedCatalog
from r4t.config import DIFFUSION_AT, METHODS, EvalConfig, PolicyConfig, RewardConfig, SamplerConfig
from r4t.diffusion.checkpoint import load_model
from r4t.diffusion.samplers import check_sampler_range
from r4t.embed import TextEncoder
from r4t.errors import DataError
from r4t.policy.context import catalog_context, prompt_context
from r4t.retrieve.methods import (MMR, CategoryDiverse, DiffusionFanout, FanoutMethod, LMFanout, NoFanout,
                                  RLlibPolicyFanout)
from r4t.rl.latent import LatentPolicy
from r4t.storage import fetch, run_root
from r4t.synth.teacher import LMTeacher, RLlibTeacher, Teacher


def lm_fanout(label: str, path: str | Path, cat: PreparedCatalog, encoder: TextEncoder, policy: PolicyConfig,
              reward: RewardConfig, temperature: float, seed: int, samples: int = 1) -> LMFanout:
    """A fan-out LM (warm start, R4T-FOLM, best-of-N) prompted as its policy config says, listed items included."""
    return LMFanout(label, str(path), encoder, cat.index, cat.item_emb, policy.template, reward.k,
                    policy.max_new_tokens, temperature, seed, samples=samples, reward=reward, backend=policy.backend,
                    device=policy.device, context=prompt_context(cat, policy))


def _lm_teacher(teacher: Teacher, cat: PreparedCatalog, encoder: TextEncoder, policy: PolicyConfig,
                reward: RewardConfig, temperature: float, seed: int) -> LMFanout:
    return lm_fanout(teacher.method, teacher.path, cat, encoder, policy, reward, temperature, seed)


def _rllib_teacher(teacher: Teacher, cat: PreparedCatalog, *_) -> RLlibPolicyFanout:
    return RLlibPolicyFanout(LatentPolicy.load(teacher.path, cat.fingerprint), cat.index, cat.item_emb)


# Each teacher kind's retrieval method (tests/test_teacher.py: one for every kind in TEACHERS).
TEACHER_FANOUTS = {LMTeacher.kind: _lm_teacher, RLlibTeacher.kind: _rllib_teacher}


def teacher_fanout(teacher: Teacher, cat: PreparedCatalog, encoder: TextEncoder, policy: PolicyConfig,
                   reward: RewardConfig, temperature: float, seed: int) -> FanoutMethod:
    """A teacher as the retrieval method named `teacher.method` (R4T-FOLM, RLlib policy), for `r4t eval` and the
    diffusion stage's comparison alike. An LM samples at `temperature`, prompted as `policy` says."""
    return TEACHER_FANOUTS[teacher.kind](teacher, cat, encoder, policy, reward, temperature, seed)


def diffusion_fanout(folder: Path, sampler: SamplerConfig, cat: PreparedCatalog, seed: int | None,
                     expect: dict | None = None) -> DiffusionFanout:
    """R4T-Diffusion from an exported model folder over its catalog (retrieval, evaluation and Serve alike): the
    model's manifest must agree with `expect`, and the sampler stay inside the noise levels its training drew."""
    model, manifest = load_model(folder, expect=expect, device=sampler.device)
    check_sampler_range(sampler, manifest, f"the training of {folder}")
    return DiffusionFanout(model, sampler, cat.index, cat.item_emb, seed,
                           catalog_context(cat, model.cfg.context_items, model.cfg.context_per_category))


def build_method(name: str, cfg: EvalConfig, cat: PreparedCatalog, encoder: TextEncoder) -> FanoutMethod:
    root, m, p = run_root(cfg.run_dir) / cat.name, cfg.methods, cfg.policy

    def lm(label: str, path: Path, samples: int = 1) -> LMFanout:
        if not (fetch(path) / "config.json").is_file():
            raise DataError(f"{label}: no policy at {path}; run `python -m r4t.jobs.rl` first")
        return lm_fanout(label, path, cat, encoder, p, cfg.reward, cfg.eval.lm_temperature, cfg.seed, samples)

    def teacher(kind: type[Teacher], run: str) -> FanoutMethod:
        """The final policy of the run `run` of this kind, as its retrieval method."""
        return teacher_fanout(kind.from_run(root / run, name), cat, encoder, p, cfg.reward, cfg.eval.lm_temperature,
                              cfg.seed)

    if name == "no fan-out":
        return NoFanout(cat.index, cat.item_emb)
    if name == "category-diverse":
        return CategoryDiverse(cat.index, cat.item_emb, cat.category_codes, m.diverse_candidates)
    if name == "MMR":
        return MMR(cat.index, cat.item_emb, m.mmr_lambda, m.mmr_candidates)
    if name == "zero-shot LM":
        return lm(name, root / "policy" / "warm_start")
    if name == "best-of-N LM":
        return lm(f"best-of-{m.best_of} LM", root / "policy" / "warm_start", m.best_of)
    if name == LMTeacher.method:
        return teacher(LMTeacher, m.rl_run)
    if name == RLlibTeacher.method:
        return teacher(RLlibTeacher, m.rllib_run)
    if name == "R4T-Diffusion" or name.startswith(DIFFUSION_AT):
        run = m.diffusion_run if name == "R4T-Diffusion" else name[len(DIFFUSION_AT):]
        folder = fetch(root / run / "model")
        if not folder.is_dir():
            raise DataError(f"{name}: no model at {folder}; run `python -m r4t.jobs.diffusion name={run}` first")
        method = diffusion_fanout(folder, cfg.sampler, cat, cfg.seed, cat.fingerprint)
        method.name = name
        return method
    raise DataError(f"unknown method {name!r}; known: {', '.join(METHODS)}, or {DIFFUSION_AT}<diffusion run>")
