"""Stage 1: the fan-out LM. Warm-start (bootstrap) or load a policy, train it with Soft-GRPO on Ray actors,
then evaluate the warm start and the RL policy on held-out queries.

    python -m r4t.jobs.rl --config jobs/rl.yaml [key=value ...]

Works locally (starts a local Ray when none is running) and under `ray job submit` (joins the job's cluster).
Writes under <run_dir>/<dataset>/: policy/warm_start/ (shared by every RL run), <name>/checkpoints/step-*/,
<name>/metrics.jsonl, <name>/eval.json and eval.md. Rerunning resumes from the last checkpoint.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from r4t.catalog import PreparedCatalog
from r4t.config import PolicyConfig, RLConfig, to_dict
from r4t.embed import TextEncoder
from r4t.errors import DataError
from r4t.io import atomic_path, read_json, write_json
from r4t.jobs.common import stage_catalogs, stage_main, synced_stage
from r4t.policy.bootstrap import bootstrap_policy
from r4t.policy.context import fanout_prompts, prompt_context
from r4t.policy.model import INFO_FILE
from r4t.rewards.scorer import RewardScorer
from r4t.rl.heldout import evaluate_policy
from r4t.rl.trainer import PromptPool, RLTrainer, check_config
from r4t.storage import publish
from r4t.synth.teacher import LMTeacher

COLUMNS = (("reward", "oar", "reward"), ("composite (all)", "oar", "composite_all"),
           ("composite", "oar", "composite"), ("ground", "oar", "ground"), ("div", "oar", "div"),
           ("Vendi", "oar", "div_raw"), ("align", "oar", "align"), ("malformed", "oar", "malformed"),
           ("cat. share", "oar", "category_share"), ("Recall@5K", "wscr", "recall"), ("Hit@5K", "wscr", "hit"))


def warm_start(cfg: RLConfig, cat: PreparedCatalog, encoder: TextEncoder, root: Path) -> Path:
    """The policy RL starts from: a given checkpoint folder, or the tiny LM bootstrapped once per dataset."""
    if cfg.policy.init != "bootstrap":
        return Path(cfg.policy.init)
    folder = root / "policy" / "warm_start"
    provenance = {"dataset": cat.name, "catalog_hash": cat.dataset.catalog_hash, "template": cfg.policy.template,
                  "context_items": cfg.policy.context_items, "k": cfg.reward.k,
                  "bootstrap": to_dict(cfg.policy.bootstrap), "seed": cfg.seed}
    if (folder / INFO_FILE).is_file() and all(read_json(folder / INFO_FILE).get(k) == v
                                                for k, v in provenance.items()):
        return folder
    train = [q for q, s in zip(cat.dataset.queries.column("text").to_pylist(),
                               cat.dataset.queries.column("split").to_pylist()) if s == "train"]
    train = list(dict.fromkeys(train))
    return bootstrap_policy(folder, cat.texts, train, encoder.encode(train), cat.index, cfg.policy.bootstrap,
                            cfg.policy.template, cfg.reward.k, cfg.seed, provenance,
                            prompt_context(cat, cfg.policy))


def prompt_pool(cat: PreparedCatalog, task: str, encoder: TextEncoder, policy: PolicyConfig, k: int
                ) -> PromptPool:
    table = cat.queries(task, "train")
    if table.num_rows == 0:
        raise DataError(f"{cat.name}: no {task.upper()} training queries to train on; give the dataset a "
                        f"queries.parquet with task={task} rows in split=train, or reference sets (sets.parquet) "
                        "whose queries r4t then uses")
    refs = cat.dataset.reference_sets()
    queries = table.column("text").to_pylist()
    prompts, listed = fanout_prompts(queries, encoder.encode(queries), policy.template, k,
                                     prompt_context(cat, policy))
    return PromptPool(queries, prompts, listed, [refs[s] for s in table.column("set_id").to_pylist()] if task == "wscr"
                      else [None] * len(queries))


def format_table(results: dict[str, dict[str, dict]]) -> str:
    """results: {dataset: {policy: evaluation}} → one Markdown table, mean [95% interval]."""
    lines = ["| dataset | policy | " + " | ".join(c for c, _, _ in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for dataset, policies in results.items():
        for policy, ev in policies.items():
            cells = []
            for _, task, metric in COLUMNS:
                m = ev.get(task, {}).get(metric)
                cells.append("-" if m is None else f"{m['mean']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}]")
            lines.append(f"| {dataset} | {policy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@synced_stage
def run(cfg: RLConfig, progress: bool = True) -> dict:
    start = time.perf_counter()
    check_config(cfg)
    results, seconds = {}, {}
    for spec, cat, root, encoder in stage_catalogs(cfg, progress,
                                                   {"rl_workers.reward_resources": cfg.workers.reward_resources}):
        t0 = time.perf_counter()
        init = warm_start(cfg, cat, encoder, root)
        publish(init)  # the learner and rollout workers may load it on other nodes
        out = root / cfg.name
        write_json(out / "config.json", to_dict(cfg))
        LMTeacher.mark(out)  # synthesis finds its teacher in this run without guessing
        trainer = RLTrainer(cfg, spec, prompt_pool(cat, cfg.rl.task, encoder, cfg.policy, cfg.reward.k), init,
                            out)
        final = trainer.train(progress)
        trainer.shutdown()
        seconds[spec.name] = time.perf_counter() - t0
        if not cfg.evaluate:
            continue
        scorer = RewardScorer(encoder, cat.index, cat.item_emb, cfg.reward)
        results[spec.name] = {
            label: evaluate_policy(str(path), cat, scorer, cfg.eval, cfg.reward, cfg.policy, cfg.seed)
            for label, path in (("warm start", init), (f"RL ({cfg.name})", final))}
        write_json(out / "eval.json", {"policies": {"warm start": str(init), "rl": str(final)},
                                       "eval": to_dict(cfg.eval), "results": results[spec.name]})
        with atomic_path(out / "eval.md") as tmp:
            tmp.write_text(f"# {spec.name}: {cfg.name} ({cfg.eval.split} split)\n\n"
                           f"{format_table({spec.name: results[spec.name]})}\n")
    return {"results": results, "table": format_table(results), "seconds": time.perf_counter() - start,
            "dataset_seconds": seconds}


def report(out: dict) -> str:
    return f"{out['table']}\nRL stage finished in {out['seconds']:.0f} s"


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__, "rl", RLConfig, run, report)


if __name__ == "__main__":
    sys.exit(main())
