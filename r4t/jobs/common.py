"""Argument handling shared by every stage entry point: --config FILE plus dotted key=value overrides."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import ray

from r4t.catalog import PreparedCatalog, prepare_catalog
from r4t.config import DatasetSpec, RunConfig, load_config
from r4t.embed import TextEncoder

T = TypeVar("T")


def add_config_args(parser: argparse.ArgumentParser, default_config: str | None) -> None:
    parser.add_argument("--config", default=default_config, help=f"YAML job config (default: {default_config})")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. index.factory=IVF256,Flat")


def config_from_args(schema: type[T], args: argparse.Namespace) -> T:
    return load_config(schema, args.config, args.overrides)


def ensure_ray() -> None:
    """Join the cluster of `ray job submit` (RAY_ADDRESS) or a running one; otherwise start a local Ray."""
    if not ray.is_initialized():
        ray.init(log_to_driver=False, include_dashboard=None)


def stage_catalogs(cfg: RunConfig, progress: bool) -> Iterator[tuple[DatasetSpec, PreparedCatalog, Path, TextEncoder]]:
    """How a stage that runs on Ray starts: join or start Ray, load the encoder, then per dataset its prepared
    catalog and its folder <run_dir>/<dataset>/. → (spec, catalog, folder, encoder) per dataset."""
    ensure_ray()
    encoder = TextEncoder(cfg.embed.model, cfg.embed.device, cfg.embed.batch_size)
    for spec in cfg.datasets:
        yield spec, prepare_catalog(spec, cfg.run_dir, encoder, cfg.index, cfg.seed, progress), \
            Path(cfg.run_dir) / spec.name, encoder


def stage_main(argv: list[str] | None, doc: str, stage: str, schema: type[T], run: Callable[[T], dict],
               report: Callable[[dict], str]) -> int:
    """`python -m r4t.jobs.<stage> [--config jobs/<stage>.yaml] [key=value ...]`: run the stage, print its report."""
    parser = argparse.ArgumentParser(prog=f"python -m r4t.jobs.{stage}", description=doc.splitlines()[0])
    add_config_args(parser, f"jobs/{stage}.yaml")
    print(report(run(config_from_args(schema, parser.parse_args(argv)))))
    return 0
