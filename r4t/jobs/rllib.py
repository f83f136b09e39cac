"""The LLM-free teacher: a fan-out policy acting in embedding space, trained with RLlib PPO on the set reward.

    python -m r4t.jobs.rllib --config jobs/rllib.yaml [key=value ...]
    r4t submit rllib --address http://HEAD:8265        (ray job submit with jobs/runtime_env.yaml)

Per dataset: prepare the catalog, write the environment's problem (training queries of rl.task, their reference
sets, the action basis) to <run_dir>/<dataset>/<name>/problem/, train PPO with EnvRunner actors, checkpoint
through RLlib, export the policy to <name>/policy/ (safetensors + JSON) and, with `evaluate`, score it against
the zero action (every row on the query) and random actions on eval.split. A rerun resumes from the last
checkpoint; a finished run is not retrained. The exported policy is a teacher for synthesis
(`synth.teacher=<name>`) and a retrieval method ("RLlib policy").
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from r4t.catalog import PreparedCatalog
from r4t.config import RLlibConfig, to_dict
from r4t.embed import TextEncoder
from r4t.errors import ConfigError, DataError
from r4t.io import atomic_path, read_json, write_json
from r4t.jobs.common import stage_catalogs, stage_main, synced_stage
from r4t.rewards.scorer import RewardScorer
from r4t.rl.latent import CONFIG_FILE, LatentAction, make_basis, make_offsets
from r4t.rl.latent_env import LatentProblem, save_problem
from r4t.rl.latent_trainer import LatentTrainer
from r4t.stats import mean_ci
from r4t.storage import publish
from r4t.synth.teacher import RLlibTeacher

# Keys that may change between a run and its resumption (how long, how often, what is evaluated after).
RESUMABLE = ("run_dir", "datasets", "resume", "evaluate", "eval", "env_runners")  # datasets: one folder each
RESUMABLE_RL = ("iterations", "checkpoint_every", "keep_checkpoints")


def task_queries(cat: PreparedCatalog, task: str, split: str, max_queries: int = 0) -> tuple[list[str], list | None]:
    """(query texts, reference item ids per query for wscr else None) of one task and split."""
    table = cat.queries(task, split)
    if max_queries:
        table = table.slice(0, max_queries)
    if table.num_rows == 0:
        raise DataError(f"{cat.name}: no {task.upper()} queries in split={split}; give the dataset a queries.parquet "
                        f"with task={task} rows there, or reference sets (sets.parquet) whose queries r4t then uses")
    refs = cat.dataset.reference_sets()
    return (table.column("text").to_pylist(),
            [list(refs[s]) for s in table.column("set_id").to_pylist()] if task == "wscr" else None)


def check_run_config(cfg: RLlibConfig, out: Path) -> None:
    """A run folder belongs to one configuration: resuming it with another action, reward or PPO setting would
    mix two experiments. Only the keys in RESUMABLE / RESUMABLE_RL may differ."""
    path = out / "config.json"
    if not cfg.resume or not path.is_file():
        return
    saved, now = read_json(path), to_dict(cfg)
    for key in sorted(set(saved) | set(now)):
        if key in RESUMABLE:
            continue
        a, b = saved.get(key), now.get(key)
        if key == "rl" and isinstance(a, dict) and isinstance(b, dict):
            a = {k: v for k, v in a.items() if k not in RESUMABLE_RL}
            b = {k: v for k, v in b.items() if k not in RESUMABLE_RL}
        if a != b:
            raise ConfigError(f"{key}={now.get(key)!r}: the run {out} was started with {saved.get(key)!r}; use "
                              "another `name`, resume=false to start over, or the same setting")


def finished(out: Path, iterations: int) -> bool:
    path = out / "policy" / CONFIG_FILE
    return path.is_file() and read_json(path)["manifest"].get("iteration") == iterations


def evaluate(cfg: RLlibConfig, cat: PreparedCatalog, encoder: TextEncoder, policy_dir: Path,
             latent: LatentAction) -> dict:
    """The trained policy (deterministic), the zero action and uniform random actions on eval.split, scored by the
    same RewardScorer as training. → {policy: {term: {mean, lo, hi}}}."""
    from r4t.rl.latent import LatentPolicy

    texts, refs = task_queries(cat, cfg.rl.task, cfg.eval.split, cfg.eval.max_queries)
    q_emb = encoder.encode(texts)
    problem = LatentProblem(q_emb, refs, RewardScorer(encoder, cat.index, cat.item_emb, cfg.reward), latent)
    rng = np.random.default_rng(cfg.seed)
    actions = {"RLlib policy": LatentPolicy.load(policy_dir).actions(q_emb),
               "zero action": np.zeros((len(texts), latent.dim), np.float32),
               "random actions": rng.uniform(-1, 1, (len(texts), latent.dim)).astype(np.float32)}
    out = {}
    for label, a in actions.items():
        scored = problem.score(np.arange(len(texts)), a)
        out[label] = {t: dict(zip(("mean", "lo", "hi"), mean_ci(scored[t])))
                      for t in ("reward", "composite", "ground", "div_raw", "align", "recall", "hit")}
    return {"split": cfg.eval.split, "task": cfg.rl.task, "queries": len(texts), "results": out}


def format_eval(name: str, ev: dict) -> str:
    cols = ("reward", "composite", "ground", "div_raw", "align", "recall")
    lines = [f"| dataset | policy ({ev['task']}, {ev['split']}, {ev['queries']} queries) | " + " | ".join(cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for label, terms in ev["results"].items():
        cells = ["-" if not np.isfinite(terms[c]["mean"]) else
                 f"{terms[c]['mean']:.3f} [{terms[c]['lo']:.3f}, {terms[c]['hi']:.3f}]" for c in cols]
        lines.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@synced_stage
def run(cfg: RLlibConfig, progress: bool = True) -> dict:
    start = time.perf_counter()
    results = {}
    for spec, cat, root, encoder in stage_catalogs(cfg, progress):
        out = root / cfg.name
        check_run_config(cfg, out)
        texts, refs = task_queries(cat, cfg.rl.task, "train")
        basis = make_basis(cfg.action.basis, cfg.action.rank, cat.item_emb)
        latent = LatentAction(cfg.reward.k, basis, cfg.action.scale,
                              make_offsets(cfg.reward.k, len(basis), cfg.action.offset, cfg.seed))
        write_json(out / "config.json", to_dict(cfg))
        RLlibTeacher.mark(out)  # synthesis finds its teacher in this run without guessing
        manifest = {"dataset": spec.name, "encoder": cat.index.manifest["encoder"], "dim": cat.index.dim,
                    "catalog_hash": cat.dataset.catalog_hash, "task": cfg.rl.task, "basis": cfg.action.basis}
        t0 = time.perf_counter()
        if cfg.resume and finished(out, cfg.rl.iterations):
            policy_dir, resumed = out / "policy", cfg.rl.iterations
        else:
            problem_dir = save_problem(out / "problem", encoder.encode(texts), refs, latent, root / "index",
                                       cfg.reward, cfg.index.nprobe, cfg.index.ef_search)
            publish(problem_dir)  # EnvRunners on other nodes load it
            trainer = LatentTrainer(cfg, problem_dir, out, latent, manifest, {"dataset": spec.name, "run": cfg.name})
            resumed = trainer.resumed_from
            try:
                policy_dir = trainer.train(progress)
            finally:
                trainer.shutdown()
        info = read_json(policy_dir / CONFIG_FILE)["manifest"]
        results[spec.name] = {"policy": str(policy_dir), "resumed_from": resumed, "iterations": info["iteration"],
                              "env_steps": info["env_steps"], "train_wall_s": info["wall_s"],
                              "env_steps_per_s": info["env_steps"] / info["wall_s"] if info["wall_s"] else None,
                              "this_run_s": time.perf_counter() - t0}
        if cfg.evaluate:
            ev = evaluate(cfg, cat, encoder, policy_dir, latent)
            write_json(out / "eval.json", ev)
            with atomic_path(out / "eval.md") as tmp:
                tmp.write_text(f"# {spec.name}: {cfg.name}\n\n{format_eval(spec.name, ev)}\n")
            results[spec.name]["eval"] = ev
    return {"results": results, "seconds": time.perf_counter() - start}


def report(out: dict) -> str:
    lines = []
    for name, r in out["results"].items():
        lines.append(f"{name}: {r['iterations']} iterations, {r['env_steps']} env steps in {r['train_wall_s']:.0f} s "
                     f"of training ({r['env_steps_per_s']:.0f} env steps/s); policy: {r['policy']}")
        if "eval" in r:
            lines.append(format_eval(name, r["eval"]))
    return "\n".join(lines + [f"RLlib stage finished in {out['seconds']:.0f} s"])


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__, "rllib", RLlibConfig, run, report)


if __name__ == "__main__":
    sys.exit(main())
