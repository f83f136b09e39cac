"""Quality and latency of the diffusion retriever's sampler settings, on the validation split (not test, so
the chosen default is not tuned on the numbers it is reported with).

    python scripts/sampler_sweep.py --config jobs/diffusion.yaml run_dir=runs/evidence [key=value ...]

For each dataset, loads <run_dir>/<dataset>/<name>/model and evaluates every (method, steps, guidance) in the
grid below: OAR composite and Vendi, WSCR Recall@5K, and fan-out latency at batch 1024 (median of 3; not
measured above 32 steps, where it only grows with the step count).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from r4t.catalog import prepare_catalog
from r4t.config import DiffusionConfig
from r4t.diffusion.checkpoint import load_model
from r4t.embed import TextEncoder
from r4t.eval.methods import eval_queries, evaluate_method, fanout_latency
from r4t.eval.report import interval_cell
from r4t.jobs.common import add_config_args, config_from_args
from r4t.retrieve.methods import DiffusionFanout

# (method, steps, guidance, churn, sigma_min)
GRID = [("euler", 8, 0.1, 0, 1e-4), ("heun", 4, 0.1, 0, 1e-4), ("heun", 8, 0.1, 0, 1e-4),
        ("heun", 16, 0.1, 0, 1e-4), ("heun", 64, 0.1, 0, 1e-4), ("heun", 256, 0.1, 0, 1e-4),
        ("sde", 64, 0.1, 0, 1e-4), ("heun", 16, 0.1, 20, 1e-4), ("heun", 16, 0.0, 0, 1e-4),
        ("heun", 16, 0.5, 0, 1e-4), ("heun", 16, 2.0, 0, 1e-4),
        # Stopping early: the last Euler step returns D(x; sigma_min), the model's own estimate of the clean rows.
        ("euler", 8, 0.1, 0, 0.005), ("euler", 8, 0.1, 0, 0.02), ("euler", 8, 0.1, 0, 0.05),
        ("euler", 4, 0.1, 0, 0.02), ("euler", 16, 0.1, 0, 0.02), ("heun", 8, 0.1, 0, 0.02),
        ("euler", 8, 0.0, 0, 0.02), ("euler", 8, 1.0, 0, 0.02)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser, "jobs/diffusion.yaml")
    parser.add_argument("--first", type=int, default=0, help="skip the first N grid points")
    args = parser.parse_args(argv)
    cfg = config_from_args(DiffusionConfig, args)
    cfg.eval.split = "val"
    encoder = TextEncoder(cfg.embed.model, cfg.embed.device, cfg.embed.batch_size)
    print("| dataset | sampler | steps | sigma_min | guidance | churn | NFE | composite | ground | Vendi (OAR) | "
          "Recall@5K | latency b=1024 |")
    print("|---" * 12 + "|")
    for spec in cfg.datasets:
        cat = prepare_catalog(spec, cfg.run_dir, encoder, cfg.index, cfg.seed, progress=False)
        model, _ = load_model(Path(cfg.run_dir) / spec.name / cfg.name / "model",
                              expect={"catalog_hash": cat.dataset.catalog_hash})
        queries = eval_queries(cat, cfg.eval, encoder)
        texts, emb, _ = queries["oar"]
        for method, steps, guidance, churn, sigma_min in GRID[args.first:]:
            sampler = dataclasses.replace(cfg.sampler, method=method, steps=steps, guidance=guidance, churn=churn,
                                          sigma_min=sigma_min)
            fanout = DiffusionFanout(model, sampler, cat.index, cat.item_emb, cfg.seed)
            res = evaluate_method(fanout, cat, queries, cfg.eval, cfg.reward)
            latency = (f"{fanout_latency(fanout, texts, emb, 1024, cfg.eval.k, cfg.reward.wscr_m, 3):.2f} s"
                       if steps <= 32 else "-")
            nfe = (2 * steps - 1 if method == "heun" else steps) * (2 if guidance else 1)
            cells = [interval_cell(res[task][key]) for task, key in
                     (("oar", "composite"), ("oar", "ground"), ("oar", "div_raw"), ("wscr", "recall"))]
            print(f"| {spec.name} | {method} | {steps} | {sigma_min:g} | {guidance} | {churn} | {nfe} | "
                  f"{' | '.join(cells)} | {latency} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
