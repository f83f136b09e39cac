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
from r4t.eval.methods import compare_methods, eval_queries
from r4t.eval.report import comparison_tables, write_report
from r4t.jobs.common import stage_main, synced_stage
from r4t.retrieve.load import build_method
from r4t.storage import remote_of, run_root


@synced_stage
def run(cfg: EvalConfig, progress: bool = True) -> dict:
    encoder = TextEncoder(cfg.embed.model, cfg.embed.device, cfg.embed.batch_size)
    results = {}
    for spec in cfg.datasets:
        cat = prepare_catalog(spec, cfg.run_dir, encoder, cfg.index, cfg.seed, progress)
        methods = [build_method(name, cfg, cat, encoder) for name in cfg.methods.names]
        results[spec.name] = compare_methods(methods, cat, eval_queries(cat, cfg.eval, encoder), cfg.eval,
                                             cfg.reward, cfg.eval.latency_batches, cfg.eval.latency_repeats, progress)
    report = write_report(run_root(cfg.run_dir) / cfg.out, results, to_dict(cfg), machine())
    return {"results": results, "report": remote_of(report) or str(report), "table": comparison_tables(results)}


def report(out: dict) -> str:
    return f"{out['table']}\nreport: {out['report']}"


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__, "eval", EvalConfig, run, report)


if __name__ == "__main__":
    sys.exit(main())
