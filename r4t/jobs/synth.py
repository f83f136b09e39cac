"""Stage 2: the frozen teacher synthesizes target sets for the diffusion retriever. The teacher (r4t.synth.teacher)
is the fan-out LM (an RL run) or the LLM-free policy of an RLlib run (`synth.teacher=rllib`).

    python -m r4t.jobs.synth --config jobs/synth.yaml [key=value ...]

Per dataset: resolve the teacher (the final policy of a run, or a policy folder), check it, plan shards of the
training queries, run the unfinished ones on SynthWorker actors, write <run_dir>/<dataset>/<name>/manifest.json.
A rerun skips finished shards, so a killed run resumes without losing or duplicating a row.
"""

from __future__ import annotations

import sys
import time

from r4t.catalog import PreparedCatalog
from r4t.config import SynthConfig
from r4t.embed import TextEncoder
from r4t.jobs.common import stage_catalogs, stage_main, synced_stage
from r4t.policy.context import fanout_prompts, prompt_context
from r4t.rewards.scorer import scorer_factory
from r4t.storage import fetch
from r4t.synth.synthesize import check_identity, pending_shards, plan_shards, run_shards, write_manifest
from r4t.synth.teacher import Teacher, resolve_teacher


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


def identity(cfg: SynthConfig, cat: PreparedCatalog, teacher: Teacher) -> dict:
    """Everything a target row depends on; a folder holds the targets of exactly one identity."""
    s = cfg.synth
    return {**teacher.identity(cfg.policy), "template": cfg.policy.template,
            "context_items": cfg.policy.context_items, "max_new_tokens": cfg.policy.max_new_tokens, "k": cfg.reward.k,
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
        teacher = resolve_teacher(cfg.synth.teacher, root)
        teacher.check(cfg, cat)
        ident = identity(cfg, cat, teacher)
        out = root / cfg.name
        check_identity(out, ident)
        shards = plan_shards(split_queries(cat, cfg, encoder), cfg.synth, cfg.seed, out)
        todo = pending_shards(shards, ident)
        factory = scorer_factory(cfg.run_dir, spec, cfg.embed, cfg.index, cfg.reward, cfg.seed)
        start = time.perf_counter()
        stats = run_shards(todo, teacher.generation(cfg), factory, cfg.synth, ident, cfg.workers,
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
