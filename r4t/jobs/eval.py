"""`r4t eval`: every fan-out method on a split of each dataset, from the artifacts the stages wrote.

    python -m r4t.jobs.eval --config jobs/eval.yaml [key=value ...]      (or: r4t eval ...)

Writes <run_dir>/<out>/report.md, metrics.json and plots. A method whose artifact is missing is an error
that names the stage to run.
"""

from __future__ import annotations

import sys

from r4t.bench import machine
from r4t.catalog import prepare_catalog
from r4t.config import EvalConfig, to_dict
from r4t.embed import TextEncoder
from r4t.eval.compare import compare_methods, eval_queries
from r4t.eval.judge import E5Judge, Judge
from r4t.eval.production_music import library_rows
from r4t.eval.report import comparison_tables, write_report
from r4t.jobs.common import stage_main, synced_stage
from r4t.retrieve.load import build_method
from r4t.storage import remote_of, run_root


def catalog_judge(encoder, cat, cfg: EvalConfig) -> Judge:
    """The judge of one catalog, its item embeddings cached under <run_dir>/<dataset>/judge/."""
    return Judge(encoder, run_root(cfg.run_dir) / cat.name / "judge", cat.texts, cat.dataset.catalog_hash,
                 cat.category_codes, cfg.eval.judge_reference, cfg.seed)


@synced_stage
def run(cfg: EvalConfig, progress: bool = True) -> dict:
    encoder = TextEncoder(cfg.embed.model, cfg.embed.device, cfg.embed.batch_size)
    judge_encoder = E5Judge() if cfg.eval.judge else None  # before any work: a missing extra fails fast
    results = {}
    for spec in cfg.datasets:
        cat = prepare_catalog(spec, cfg.run_dir, encoder, cfg.index, cfg.seed, progress)
        methods = [build_method(name, cfg, cat, encoder) for name in cfg.methods.names]
        queries = eval_queries(cat, cfg.eval, encoder, cfg.eval.handwritten and spec.format == "builtin")
        judge = catalog_judge(judge_encoder, cat, cfg) if judge_encoder else None
        library = library_rows(cat.dataset.items.column("category").to_pylist())
        results[spec.name] = compare_methods(methods, cat, queries, cfg.eval, cfg.reward, cfg.eval.latency_batches,
                                             cfg.eval.latency_repeats, progress, judge, library,
                                             cfg.eval.latency_seconds, cfg.eval.pair_latency_batches)
    report = write_report(run_root(cfg.run_dir) / cfg.out, results, to_dict(cfg), machine())
    return {"results": results, "report": remote_of(report) or str(report), "table": comparison_tables(results)}


def report(out: dict) -> str:
    return f"{out['table']}\nreport: {out['report']}"


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__, "eval", EvalConfig, run, report)


if __name__ == "__main__":
    sys.exit(main())
