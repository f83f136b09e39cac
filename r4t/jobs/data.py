"""Stage 0: datasets → item embeddings → faiss index, then the baseline table.

    python -m r4t.jobs.data --config jobs/data.yaml [key=value ...]

Writes under run_dir: <dataset>/data/*.parquet, <dataset>/index/*, baselines.json, baselines.md.
Rerunning reuses every artifact whose manifest still matches the config.
"""

from __future__ import annotations

import sys
import time

from r4t.catalog import PreparedCatalog, prepare_catalog
from r4t.config import PrepareConfig, to_dict
from r4t.embed import TextEncoder
from r4t.eval.compare import compare_methods, eval_queries
from r4t.eval.report import JUDGE_VIEW, REWARD_VIEW, quality_table
from r4t.io import atomic_path, write_json
from r4t.jobs.common import stage_main, synced_stage
from r4t.retrieve.methods import CategoryDiverse, NoFanout
from r4t.storage import run_root


def prepare_all(cfg: PrepareConfig, encoder: TextEncoder, progress: bool = True) -> dict[str, PreparedCatalog]:
    return {spec.name: prepare_catalog(spec, cfg.run_dir, encoder, cfg.index, cfg.seed, progress)
            for spec in cfg.datasets}


@synced_stage
def run(cfg: PrepareConfig, progress: bool = True) -> dict:
    start = time.perf_counter()
    encoder = TextEncoder(cfg.embed.model, cfg.embed.device, cfg.embed.batch_size)
    catalogs = prepare_all(cfg, encoder, progress)
    results = {}
    for name, cat in catalogs.items():
        methods = [NoFanout(cat.index, cat.item_emb),
                   CategoryDiverse(cat.index, cat.item_emb, cat.category_codes, cfg.eval.candidates)]
        results[name] = compare_methods(methods, cat, eval_queries(cat, cfg.eval, encoder), cfg.eval, cfg.reward,
                                        progress=progress)
    table = quality_table(results, JUDGE_VIEW + REWARD_VIEW)
    run_dir = run_root(cfg.run_dir)
    write_json(run_dir / "baselines.json", {"config": to_dict(cfg), "results": results})
    with atomic_path(run_dir / "baselines.md") as tmp:
        tmp.write_text(f"# Baselines ({cfg.eval.split} split, K={cfg.eval.k})\n\n{table}\n")
    return {"results": results, "table": table, "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__, "data", PrepareConfig, run, lambda out: out["table"])


if __name__ == "__main__":
    sys.exit(main())
