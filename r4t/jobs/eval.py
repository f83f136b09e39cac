"""`r4t eval`: every fan-out method on a split of each dataset, from the artifacts the stages wrote.

    python -m r4t.jobs.eval --config jobs/eval.yaml [key=value ...]      (or: r4t eval ...)

Writes <run_dir>/<out>/report.md, metrics.json and plots. A method whose artifact is missing is an error
that names the stage to run.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from r4t.bench import machine
from r4t.catalog import PreparedCatalog, prepare_catalog
from r4t.config import EvalConfig, to_dict
from r4t.diffusion.checkpoint import load_model
from r4t.embed import TextEncoder
from r4t.errors import DataError
from r4t.eval.methods import eval_queries, evaluate_method, fanout_latency
from r4t.eval.report import quality_table, write_report
from r4t.io import read_json
from r4t.jobs.common import stage_main
from r4t.policy.model import INFO_FILE
from r4t.retrieve.methods import MMR, DiffusionFanout, FanoutMethod, LMFanout, NoFanout
from r4t.rl.checkpoint import latest_checkpoint


def _final_policy(root: Path, run: str) -> Path:
    last = latest_checkpoint(root / run)
    if last is None or not read_json(last / INFO_FILE).get("final"):
        raise DataError(f"R4T-FOLM: no finished RL run {root / run}; run `python -m r4t.jobs.rl` first")
    return last


def build_methods(cfg: EvalConfig, cat: PreparedCatalog, encoder: TextEncoder) -> list[FanoutMethod]:
    root, m, p = Path(cfg.run_dir) / cat.name, cfg.methods, cfg.policy
    warm = root / "policy" / "warm_start"

    def lm(name: str, path: Path, samples: int = 1) -> LMFanout:
        if not (path / "config.json").is_file():
            raise DataError(f"{name}: no policy at {path}; run `python -m r4t.jobs.rl` first")
        return LMFanout(name, str(path), encoder, cat.index, cat.item_emb, p.template, cfg.reward.k,
                        p.max_new_tokens, cfg.eval.lm_temperature, cfg.seed, samples=samples, reward=cfg.reward)

    def diffusion() -> DiffusionFanout:
        folder = root / m.diffusion_run / "model"
        if not folder.is_dir():
            raise DataError(f"R4T-Diffusion: no model at {folder}; run `python -m r4t.jobs.diffusion` first")
        model, _ = load_model(folder, expect={"catalog_hash": cat.dataset.catalog_hash, "dim": cat.index.dim,
                                              "encoder": cat.index.manifest["encoder"]})
        return DiffusionFanout(model, cfg.sampler, cat.index, cat.item_emb, cfg.seed)

    make = {"no fan-out": lambda: NoFanout(cat.index, cat.item_emb),
            "MMR": lambda: MMR(cat.index, cat.item_emb, m.mmr_lambda, m.mmr_candidates),
            "zero-shot LM": lambda: lm("zero-shot LM", warm),
            "best-of-N LM": lambda: lm(f"best-of-{m.best_of} LM", warm, m.best_of),
            "R4T-FOLM": lambda: lm("R4T-FOLM", _final_policy(root, m.rl_run)),
            "R4T-Diffusion": diffusion}
    return [make[name]() for name in m.names]


def run(cfg: EvalConfig, progress: bool = True) -> dict:
    encoder = TextEncoder(cfg.embed.model, cfg.embed.device, cfg.embed.batch_size)
    results = {}
    for spec in cfg.datasets:
        cat = prepare_catalog(spec, cfg.run_dir, encoder, cfg.index, cfg.seed, progress)
        methods = build_methods(cfg, cat, encoder)
        queries = eval_queries(cat, cfg.eval, encoder)
        texts, emb, _ = next(iter(queries.values()))
        per_method = {}
        for method in tqdm(methods, desc=f"eval {spec.name}", unit="method", disable=not progress):
            res = evaluate_method(method, cat, queries, cfg.eval, cfg.reward)
            res["latency_s"] = {str(b): fanout_latency(method, texts, emb, b, cfg.eval.k, cfg.reward.wscr_m,
                                                       cfg.eval.latency_repeats) for b in cfg.eval.latency_batches}
            per_method[method.name] = res
        results[spec.name] = {"queries": {t: len(q[0]) for t, q in queries.items()}, "methods": per_method}
    report = write_report(Path(cfg.run_dir) / cfg.out, results, to_dict(cfg), machine())
    return {"results": results, "report": str(report), "table": quality_table(results)}


def report(out: dict) -> str:
    return f"{out['table']}\nreport: {out['report']}"


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__, "eval", EvalConfig, run, report)


if __name__ == "__main__":
    sys.exit(main())
