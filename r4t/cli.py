"""The `r4t` command.

    r4t demo [--dataset NAME]      the whole pipeline on the embedded default (data → index → RL → synthesis →
                                   diffusion → eval), then the results table
    r4t retrieve QUERY [QUERY ...] the set each query gets from one method (--method, --dataset)
    r4t eval                       every method on a held-out split: report.md, metrics.json, plots
    r4t data build NAME            one dataset (built-in, or --format/--path) into <run_dir>/NAME/data
    r4t index build                embeddings + faiss index for every dataset in the config
    r4t score FANOUTS.jsonl        per-term rewards of fan-outs, one JSON line each
    r4t submit STAGE [--address URL]  a stage or the pipeline as a Ray job (ray job submit with jobs/runtime_env.yaml)
    r4t serve [--dataset NAME]     the HTTP API on Ray Serve (serve_configs/ for replicas and autoscaling)
    r4t bench foundation           encoder, index and reward-scorer throughput
    r4t bench serve                the served app under load vs the in-process sampler
    r4t bench fuzz                 seeded fuzzed requests at the served app: no 5xx, replica memory flat

Every command takes --config FILE and dotted overrides (key=value); errors in input name the file, key
and value, and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from r4t.config import METHODS, DatasetSpec, EvalConfig, PipelineConfig, PrepareConfig
from r4t.errors import ConfigError, DataError, reporting_errors
from r4t.jobs.common import add_config_args, config_from_args
from r4t.jobs.submit import DEFAULT_ADDRESS, SCHEMAS, submit, submit_command
from r4t.serve.messages import LAYOUTS
from r4t.storage import publish, run_root

OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def _cmd_submit(args: argparse.Namespace) -> int:
    if args.pipeline_stages and args.stage != "pipeline":
        raise ConfigError(f"--stage: only `r4t submit pipeline` runs a subset of stages, not {args.stage!r}")
    cmd = submit_command(args.stage, args.config, args.overrides, args.address, args.runtime_env,
                         args.submission_id, not args.no_wait, args.pipeline_stages)
    return submit(cmd, args.dry_run)


def _cmd_demo(args: argparse.Namespace) -> None:
    from r4t.jobs import pipeline

    print(pipeline.report(pipeline.run(pipeline.only_dataset(config_from_args(PipelineConfig, args), args.dataset))))


def _cmd_data_build(args: argparse.Namespace) -> None:
    from r4t.data.catalogs import load_dataset

    cfg = config_from_args(PrepareConfig, args)
    spec = DatasetSpec(args.name, args.format, args.path)
    ds = load_dataset(spec, cfg.seed)
    out = ds.save(run_root(cfg.run_dir) / spec.name / "data")
    publish(out)
    print(f"{spec.name}: {ds.items.num_rows} items, {ds.sets.num_rows} reference sets, "
          f"{ds.queries.num_rows} queries -> {out}")


def _cmd_index_build(args: argparse.Namespace) -> None:
    from r4t.embed import TextEncoder
    from r4t.jobs.data import prepare_all

    cfg = config_from_args(PrepareConfig, args)
    for name, cat in prepare_all(cfg, TextEncoder(cfg.embed.model, cfg.embed.device, cfg.embed.batch_size)).items():
        print(f"{name}: {cat.index.manifest['count']} items, dim {cat.index.dim}, {cat.index.manifest['factory']}, "
              f"{len(cat.index.shards)} shard(s) -> {cfg.run_dir}/{name}/index")


def _read_fanouts(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("query"), str):
            raise DataError(f"{path}:{n}: needs a string field 'query'")
        fanout = rec.get("completion", rec.get("subqueries"))
        if not isinstance(fanout, (str, list)):
            raise DataError(f"{path}:{n}: needs 'completion' (text) or 'subqueries' (list of strings)")
        records.append(rec)
    if not records:
        raise DataError(f"{path}: no fan-outs in the file")
    return records


def _cmd_score(args: argparse.Namespace) -> None:
    from r4t.catalog import prepare_catalog
    from r4t.embed import TextEncoder
    from r4t.rewards.scorer import RewardScorer

    cfg = config_from_args(PrepareConfig, args)
    records = _read_fanouts(Path(args.fanouts))
    spec = next((s for s in cfg.datasets if s.name == args.dataset), None)
    if spec is None:
        raise DataError(f"--dataset {args.dataset!r} is not in the config's datasets "
                        f"{[s.name for s in cfg.datasets]}")
    encoder = TextEncoder(cfg.embed.model, cfg.embed.device, cfg.embed.batch_size)
    cat = prepare_catalog(spec, cfg.run_dir, encoder, cfg.index, cfg.seed, progress=False)
    scorer = RewardScorer(encoder, cat.index, cat.item_emb, cfg.reward)
    scores = scorer.score([r["query"] for r in records], [r.get("completion", r.get("subqueries")) for r in records],
                          [r.get("reference") for r in records])
    out = open(args.out, "w") if args.out else sys.stdout
    for i, rec in enumerate(records):
        row = {k: (None if isinstance(v[i], float) and np.isnan(v[i]) else v[i].tolist() if hasattr(v[i], "tolist")
                   else v[i]) for k, v in scores.items()}
        out.write(json.dumps({"query": rec["query"], **row}) + "\n")
    if args.out:
        out.close()
    means = {k: float(np.nanmean(v)) for k, v in scores.items() if k not in ("error", "malformed", "top1")
             and np.isfinite(v.astype(float)).any()}
    print(f"scored {len(records)} fan-outs ({int(scores['malformed'].sum())} malformed): "
          + ", ".join(f"{k}={v:.4f}" for k, v in means.items()), file=sys.stderr)


def _cmd_bench(args: argparse.Namespace) -> None:
    from r4t.bench import bench_foundation

    bench_foundation(config_from_args(PrepareConfig, args), args.dataset, args.seconds)


def _cmd_eval(args: argparse.Namespace) -> None:
    from r4t.jobs.eval import report, run

    print(report(run(config_from_args(EvalConfig, args))))


def _cmd_retrieve(args: argparse.Namespace) -> None:
    from r4t.retrieve import Retriever

    # Positional words of the form key=value are config overrides, the rest are queries.
    overrides = [q for q in args.queries if OVERRIDE.match(q)]
    args.overrides += overrides
    queries = [q for q in args.queries if q not in overrides]
    retriever = Retriever.from_config(config_from_args(EvalConfig, args), args.dataset, args.method)
    sets = retriever.retrieve(queries, args.k)
    if args.json:
        for s in sets:
            print(json.dumps(s.to_dict(embeddings=args.embeddings)))
        return
    for s in sets:
        print(f"\n{s.query}  ({s.method}, {len(s.item_ids)} items)")
        if s.subqueries:
            print("  sub-queries: " + " | ".join(s.subqueries))
        for item_id, text, category, score in zip(s.item_ids, s.texts, s.categories, s.scores):
            print(f"  {score:6.3f}  [{category}] {text}  ({item_id})")


def _cmd_bench_serve(args: argparse.Namespace) -> None:
    from r4t.serve.load_bench import bench_serve, format_rows

    run_dir = config_from_args(EvalConfig, args).run_dir
    rows = bench_serve(run_dir, args.dataset, args.layouts, args.replicas, args.concurrency, args.requests,
                       args.max_seconds, {"method": "euler", "steps": args.steps})
    print(format_rows(rows))
    print(f"\nreproduce: r4t bench serve --dataset {args.dataset} --requests {args.requests} --steps {args.steps} "
          f"run_dir={run_dir}")


def _cmd_bench_fuzz(args: argparse.Namespace) -> int:
    from r4t.serve.fuzz_bench import bench_fuzz, format_report

    cfg = config_from_args(EvalConfig, args)  # the app as `r4t serve` builds it from the same config
    rep = bench_fuzz(cfg.run_dir, args.dataset, dataclasses.asdict(cfg.sampler), cfg.methods.diffusion_run,
                     args.requests, args.max_seconds, args.seed, args.concurrency, args.max_rss_growth / 100)
    print(format_report(rep))
    print(f"\nreproduce: r4t bench fuzz --dataset {args.dataset} --requests {args.requests} --seed {args.seed} "
          f"--concurrency {args.concurrency} run_dir={cfg.run_dir}")
    if args.out:
        Path(args.out).write_text(json.dumps(rep, indent=1) + "\n")
    return 0 if rep["ok"] else 1


def _cmd_serve(args: argparse.Namespace) -> None:
    import time

    from ray import serve

    from r4t.jobs.common import ensure_ray
    from r4t.serve.app import build_app

    cfg = config_from_args(EvalConfig, args)  # run_dir, the diffusion run and its sampler, as `r4t retrieve` reads them
    app = build_app({"run_dir": cfg.run_dir, "dataset": args.dataset, "diffusion_run": cfg.methods.diffusion_run,
                     "sampler": dataclasses.asdict(cfg.sampler), "api_key": args.api_key,
                     "denoiser_replicas": args.replicas, "layout": args.layout})
    ensure_ray()
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(app, name="r4t", route_prefix="/")
    print(f"r4t serving {args.dataset} on http://{args.host}:{args.port} (docs: /docs); Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:  # Ctrl-C or SIGTERM (r4t.errors.Stopped): take the deployments down before Ray goes
        serve.shutdown()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="r4t", description="R4T set-valued retrieval on Ray")
    sub = parser.add_subparsers(dest="command", required=True)
    configs: dict[argparse.ArgumentParser, str] = {}

    def command(group: Any, name: str, func: Callable, config: str, help: str) -> argparse.ArgumentParser:
        """A subcommand that runs func on a job config (default: config) and its dotted overrides."""
        p = group.add_parser(name, help=help)
        p.set_defaults(func=func)
        configs[p] = config  # --config and the overrides are added last, after the command's own positionals
        return p

    p = command(sub, "demo", _cmd_demo, "jobs/demo.yaml", help="run the whole pipeline on the embedded default")
    p.add_argument("--dataset", default=None, help="only this dataset of the config (default: all of them)")

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="action", required=True)
    p = command(data, "build", _cmd_data_build, "jobs/data.yaml", help="build one dataset into <run_dir>/NAME/data")
    p.add_argument("name", help="built-in dataset (polyvore, playlists) or a name for --format/--path")
    p.add_argument("--format", default="builtin", help="builtin | r4t | maryland | polyvore_outfits | mpd | "
                                                       "fashion_jsonl | playlists_jsonl")
    p.add_argument("--path", default=None, help="source file or folder for non-builtin formats")

    index = sub.add_parser("index", help="indexes").add_subparsers(dest="action", required=True)
    command(index, "build", _cmd_index_build, "jobs/data.yaml", help="embed and index every dataset of the config")

    p = command(sub, "score", _cmd_score, "jobs/data.yaml", help="per-term rewards of fan-outs in a JSONL file")
    p.add_argument("fanouts", help="JSONL: {query, completion | subqueries, reference (optional item ids)}")
    p.add_argument("--dataset", default="polyvore")
    p.add_argument("--out", default=None, help="write scores here (default: stdout)")

    command(sub, "eval", _cmd_eval, "jobs/eval.yaml",
            help="compare every fan-out method on a split: report.md, metrics.json, plots")

    p = command(sub, "retrieve", _cmd_retrieve, "jobs/eval.yaml",
                help="the set of K catalog items each query gets from one method")
    p.add_argument("queries", nargs="+", metavar="QUERY", help="query texts (quote each)")
    p.add_argument("--dataset", default="polyvore")
    p.add_argument("--method", default="R4T-Diffusion", help="one of: " + ", ".join(METHODS))
    p.add_argument("--k", type=int, default=None, help="items per set (default: eval.k of the config)")
    p.add_argument("--json", action="store_true", help="one JSON object per query instead of text")
    p.add_argument("--embeddings", action="store_true", help="with --json: include the generated embeddings")

    p = sub.add_parser("submit", help="run a stage (or the pipeline) on a Ray cluster with `ray job submit`")
    p.add_argument("stage", choices=list(SCHEMAS))
    p.add_argument("--config", default=None, help="job config (default: jobs/<stage>.yaml)")
    p.add_argument("--address", default=None, help=f"the cluster's dashboard (default: $RAY_ADDRESS, else "
                                                   f"{DEFAULT_ADDRESS})")
    p.add_argument("--runtime-env", default="jobs/runtime_env.yaml")
    p.add_argument("--submission-id", default=None, help="default: r4t-<stage>-<time>")
    p.add_argument("--stage", dest="pipeline_stages", action="append", default=None,
                   help="with `pipeline`: only this stage of it (repeatable)")
    p.add_argument("--no-wait", action="store_true", help="return once submitted (default: follow the logs)")
    p.add_argument("--dry-run", action="store_true", help="print the ray job submit command only")
    p.set_defaults(func=_cmd_submit, overrides=[])

    p = command(sub, "serve", _cmd_serve, "jobs/eval.yaml",
                help="serve a dataset's artifacts over HTTP with Ray Serve (see serve_configs/)")
    p.add_argument("--dataset", default="polyvore")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--replicas", type=int, default=1, help="denoiser replicas (composed layout)")
    p.add_argument("--layout", choices=LAYOUTS, default="fused",
                   help="composed: a deployment per stage; fused: one deployment runs them all")
    p.add_argument("--api-key", default=None, help="require this value in the x-api-key header")

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="suite", required=True)
    p = command(bench, "foundation", _cmd_bench, "jobs/data.yaml",
                help="encoder sentences/s, index queries/s, scorer fan-outs/s")
    p.add_argument("--dataset", default="playlists")
    p.add_argument("--seconds", type=float, default=5.0, help="minimum time per measurement")
    p = command(bench, "serve", _cmd_bench_serve, "jobs/eval.yaml",
                help="the served app under load on loopback vs the in-process sampler")
    p.add_argument("--dataset", default="polyvore")
    p.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 2], help="replicas of the deployment that samples")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=320, help="per setting")
    p.add_argument("--max-seconds", type=float, default=60.0, help="per setting")
    p.add_argument("--steps", type=int, default=8, help="Euler sampler steps")
    p = command(bench, "fuzz", _cmd_bench_fuzz, "jobs/eval.yaml",
                help="seeded fuzzed HTTP requests at the served app on loopback: no 5xx, replica memory flat")
    p.add_argument("--dataset", default="polyvore")
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--max-seconds", type=float, default=900.0, help="stop sending after this long")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=8, help="closed-loop clients")
    p.add_argument("--max-rss-growth", type=float, default=10.0,
                   help="percent a replica's memory may grow from after the warm-up to the end")
    p.add_argument("--out", default=None, help="also write the report here as JSON")

    for p, config in configs.items():
        add_config_args(p, config)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # parse_known_args: argparse cannot place overrides that follow an option after a positional argument
    # (`r4t score F.jsonl --dataset x reward.k=3`), so leftovers of the key=value form join the overrides.
    args, extra = parser.parse_known_args(argv)
    bad = [a for a in extra if a.startswith("-") or "=" not in a]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    args.overrides = list(getattr(args, "overrides", [])) + extra
    return reporting_errors(lambda: args.func(args), "r4t")


if __name__ == "__main__":
    sys.exit(main())
