"""Quality on a catalog the denoiser was not trained on: the demo's R4T-Diffusion, served on its training catalog
and on the same catalog with a share of its items withdrawn (what a catalog update does to a running server),
beside the methods that need no training, on the same judge.

    python scripts/catalog_swap_quality.py --config jobs/eval.yaml run_dir=runs/demo \
        [--withdraw 0.3] [--dataset polyvore]

The changed catalog is prepared as the data stage prepares any catalog (data/ and index/ under <out>/<dataset>),
with the same encoder, so the app could serve it with `catalog: <out>/<dataset>` and `allow_catalog_change: true`.
Every set is scored by the training catalog's judge (its returned rows mapped back), so relevance percentiles keep
one yardstick across both catalogs. Prints a markdown table: judge mean [95% interval] on the test split's
intents and the hand-written ones.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from r4t.catalog import load_catalog, prepare_catalog
from r4t.config import DatasetSpec, EvalConfig
from r4t.data.dataset import Dataset
from r4t.data.schema import SETS_SCHEMA
from r4t.embed import TextEncoder
from r4t.eval.compare import eval_queries
from r4t.eval.judge import E5Judge
from r4t.jobs.common import add_config_args, config_from_args
from r4t.jobs.eval import catalog_judge
from r4t.retrieve.load import build_method, diffusion_fanout
from r4t.stats import mean_ci
from r4t.storage import run_root

METHODS = ("no fan-out", "category-diverse", "R4T-Diffusion")


def withdrawn_catalog(cat, share: float, out: str, encoder: TextEncoder, cfg: EvalConfig, seed: int):
    """The catalog less a random `share` of its items (its sets dropped: they name withdrawn items), prepared under
    <out>/<dataset> with the same encoder (which knows every kept item's vector: nothing is re-encoded)."""
    keep = np.sort(np.random.default_rng(seed).choice(len(cat.texts), round(len(cat.texts) * (1 - share)),
                                                      replace=False))
    ds = cat.dataset
    source = Dataset(ds.name, ds.items.take(pa.array(keep)), SETS_SCHEMA.empty_table(),
                     ds.queries.filter(pc.equal(ds.queries.column("task"), "oar")))
    folder = source.save(run_root(out) / "source" / ds.name)
    encoder.remember(cat.texts, cat.item_emb)
    changed = prepare_catalog(DatasetSpec(ds.name, "r4t", str(folder)), out, encoder, cfg.index, cfg.seed,
                              progress=False)
    return changed, keep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_args(parser, "jobs/eval.yaml")
    parser.add_argument("--dataset", default="polyvore")
    parser.add_argument("--withdraw", type=float, default=0.3, help="share of the items withdrawn")
    parser.add_argument("--out", default="runs/catalog_swap", help="where the changed catalog is prepared")
    args = parser.parse_args(argv)
    cfg = config_from_args(EvalConfig, args)
    encoder = TextEncoder(cfg.embed.model, cfg.embed.device, cfg.embed.batch_size)
    cat = load_catalog(run_root(cfg.run_dir) / args.dataset)
    changed, kept_rows = withdrawn_catalog(cat, args.withdraw, args.out, encoder, cfg, cfg.seed)
    judge = catalog_judge(E5Judge(), cat, cfg)
    queries = eval_queries(cat, cfg.eval, encoder, handwritten=True)
    queries = {task: queries[task] for task in ("oar", "handwritten") if task in queries}
    model = run_root(cfg.run_dir) / args.dataset / cfg.methods.diffusion_run / "model"
    print(f"{args.dataset}: {len(cat.texts)} items; {len(changed.texts)} after withdrawing {args.withdraw:.0%}\n")
    print("| catalog | method | test intents | hand-written intents |\n|---|---|---|---|")
    for label, served, to_training_rows in (("training's", cat, None), (f"{args.withdraw:.0%} withdrawn", changed,
                                                                        kept_rows)):
        for name in METHODS:
            method = (diffusion_fanout(model, cfg.sampler, served, cfg.seed) if name == "R4T-Diffusion"
                      else build_method(name, cfg, served, encoder))  # the denoiser: any catalog by its encoder
            cells = []
            for task in ("oar", "handwritten"):
                texts, emb, _ = queries[task]
                rows = method.retrieve(texts, emb, cfg.eval.k, cfg.reward.wscr_m).items
                scores = judge.score(texts, rows if to_training_rows is None else to_training_rows[rows])["judge"]
                mean, lo, hi = mean_ci(scores)
                cells.append(f"{mean:.3f} [{lo:.3f}, {hi:.3f}]")
            print(f"| {label} | {name} | {cells[0]} | {cells[1]} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
