"""Stage 2: the frozen RL policy synthesizes target sets for the diffusion retriever. The teacher is the fan-out
LM (an RL run) or the latent policy of an RLlib run (`synth.teacher=rllib`, the LLM-free teacher).

    python -m r4t.jobs.synth --config jobs/synth.yaml [key=value ...]

Per dataset: resolve the teacher (the final checkpoint of an RL run, or a policy folder), plan shards of the
training queries, run the unfinished ones on SynthWorker actors, write <run_dir>/<dataset>/<name>/manifest.json.
A rerun skips finished shards, so a killed run resumes without losing or duplicating a row.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from r4t.catalog import PreparedCatalog
from r4t.config import PolicyConfig, SynthConfig
from r4t.embed import TextEncoder
from r4t.errors import ConfigError, DataError
from r4t.io import read_json, sha256_file
from r4t.jobs.common import stage_catalogs, stage_main, synced_stage
from r4t.policy.context import fanout_prompts, prompt_context
from r4t.policy.model import INFO_FILE
from r4t.rewards.scorer import scorer_factory
from r4t.rl.checkpoint import latest_checkpoint
from r4t.storage import fetch
from r4t.synth.synthesize import check_identity, pending_shards, plan_shards, run_shards, write_manifest
from r4t.rl.latent import CONFIG_FILE as LATENT_CONFIG
from r4t.rl.latent import WEIGHTS as LATENT_WEIGHTS
from r4t.rl.latent import LatentPolicy
from r4t.synth.worker import Generation, LatentGeneration


def resolve_teacher(cfg: SynthConfig, root: Path) -> Path:
    """synth.teacher: an RL run name under <run_dir>/<dataset>/ (must have finished), an RLlib run (its exported
    latent policy, <run>/policy/), or a policy folder (an LM, or an exported latent policy)."""
    teacher = cfg.synth.teacher
    run = root / teacher
    if is_latent_run(run):
        policy = run / "policy"
        if not (policy / LATENT_CONFIG).is_file() or not read_json(policy / LATENT_CONFIG)["manifest"].get("final"):
            raise DataError(f"synth.teacher={teacher!r}: the RLlib run {run} has not finished (no final exported "
                            "policy); run or resume `python -m r4t.jobs.rllib` first")
        return policy
    if (run / "checkpoints").is_dir():
        last = latest_checkpoint(run)
        if last is None or not read_json(last / INFO_FILE).get("final"):
            raise DataError(f"synth.teacher={teacher!r}: the RL run {run} has not finished (no final checkpoint); "
                            "run or resume `python -m r4t.jobs.rl` first")
        rl_cfg = read_json(run / "config.json")["policy"]
        for key in ("template", "context_items", "max_new_tokens"):
            if rl_cfg.get(key, getattr(PolicyConfig(), key)) != getattr(cfg.policy, key):
                raise ConfigError(f"policy.{key}={getattr(cfg.policy, key)!r}: the teacher {run} was trained with "
                                  f"{rl_cfg.get(key)!r}; use the same")
        return last
    if (Path(teacher) / "config.json").is_file() or (Path(teacher) / LATENT_CONFIG).is_file():
        return Path(teacher)
    raise ConfigError(f"synth.teacher={teacher!r}: neither an RL run under {root} nor a model folder")


def is_latent_run(run: Path) -> bool:
    """An RLlib run folder (python -m r4t.jobs.rllib), told apart from an LM RL run by its config."""
    return (run / "config.json").is_file() and "action" in read_json(run / "config.json")


def teacher_generation(cfg: SynthConfig, teacher: Path, cat: PreparedCatalog) -> tuple:
    """→ (how the workers generate: Generation or LatentGeneration, the teacher's weights hash). A latent policy
    must have been trained on this catalog, encoder and dimension, and emit reward.k rows."""
    if (teacher / LATENT_CONFIG).is_file():
        info = LatentPolicy.load(teacher, {"catalog_hash": cat.dataset.catalog_hash, "dim": cat.index.dim,
                                           "encoder": cat.index.manifest["encoder"]}).info
        if info.k != cfg.reward.k:
            raise ConfigError(f"reward.k={cfg.reward.k}: the latent teacher {teacher} emits k={info.k} rows")
        policy_hash = sha256_file(teacher / LATENT_WEIGHTS)
        return LatentGeneration(str(teacher.resolve()), policy_hash, cfg.reward.k), policy_hash
    policy_hash = sha256_file(teacher / "model.safetensors")
    return Generation(cfg.policy.backend, str(teacher.resolve()), policy_hash, cfg.policy.device,
                      cfg.policy.max_new_tokens, cfg.reward.k), policy_hash


def split_queries(cat: PreparedCatalog, cfg: SynthConfig, encoder: TextEncoder
                  ) -> dict[str, tuple[list[str], list[str], list[str], list[list[str]], list]]:
    """split → (query ids, texts, the policy's prompts, the items each prompt lists, reference sets)."""
    refs, context = cat.dataset.reference_sets(), prompt_context(cat, cfg.policy)
    out = {}
    for split in cfg.synth.splits:
        table = cat.queries(cfg.synth.task, split)
        if cfg.synth.max_queries:
            table = table.slice(0, cfg.synth.max_queries)
        set_ids, texts = table.column("set_id").to_pylist(), table.column("text").to_pylist()
        prompts, listed = fanout_prompts(texts, encoder.encode(texts), cfg.policy.template, cfg.reward.k, context)
        out[split] = (table.column("query_id").to_pylist(), texts, prompts, listed,
                      [refs[s] if cfg.synth.task == "wscr" else None for s in set_ids])
    return out


def identity(cfg: SynthConfig, cat: PreparedCatalog, teacher: Path, policy_hash: str) -> dict:
    """Everything a target row depends on; a folder holds the targets of exactly one identity."""
    s = cfg.synth
    backend = "latent" if (teacher / LATENT_CONFIG).is_file() else cfg.policy.backend
    return {"teacher": str(teacher), "policy_hash": policy_hash, "backend": backend,
            "template": cfg.policy.template, "context_items": cfg.policy.context_items,
            "max_new_tokens": cfg.policy.max_new_tokens, "k": cfg.reward.k,
            "task": s.task, "samples": s.samples, "keep_top": s.keep_top, "rows": s.rows,
            "queries_per_shard": s.queries_per_shard, "max_queries": s.max_queries,
            "prompts_per_call": s.prompts_per_call, "temperature": s.temperature, "top_p": s.top_p,
            "seed": cfg.seed, "dim": cat.index.dim, "catalog_hash": cat.dataset.catalog_hash,
            "encoder": cat.index.manifest["encoder"], "encoder_hash": cat.index.manifest["weights_hash"]}


@synced_stage
def run(cfg: SynthConfig, progress: bool = True) -> dict:
    results = {}
    for spec, cat, root, encoder in stage_catalogs(cfg, progress,
                                                   {"synth_workers.resources": cfg.workers.resources}):
        teacher = resolve_teacher(cfg, root)
        generation, policy_hash = teacher_generation(cfg, teacher, cat)
        ident = identity(cfg, cat, teacher, policy_hash)
        out = root / cfg.name
        check_identity(out, ident)
        shards = plan_shards(split_queries(cat, cfg, encoder), cfg.synth, cfg.seed, out)
        todo = pending_shards(shards, ident)
        factory = scorer_factory(cfg.run_dir, spec, cfg.embed, cfg.index, cfg.reward, cfg.seed)
        start = time.perf_counter()
        stats = run_shards(todo, generation, factory, cfg.synth, ident, cfg.workers,
                           {"dataset": spec.name, "run": cfg.name}, progress)
        fetch(out)  # shards written by workers on other nodes
        manifest = write_manifest(out, ident, cfg.synth.splits, stats, time.perf_counter() - start)
        results[spec.name] = {"out": str(out), "shards": len(shards), "ran": len(todo), **manifest}
    return results


def summary(results: dict) -> str:
    lines = ["| dataset | split | rows | reward | sigma_data | rows/s (this run) |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        rate = (r.get("last_run") or {}).get("rows_per_s")
        for split, e in r["splits"].items():
            lines.append(f"| {name} | {split} | {e['rows']} | {e['reward_mean']:.3f} | {r['sigma_data']:.4f} | "
                         f"{'-' if rate is None else f'{rate:.1f}'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__, "synth", SynthConfig, run, summary)


if __name__ == "__main__":
    sys.exit(main())
