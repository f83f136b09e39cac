"""Argument handling shared by every stage entry point: --config FILE plus dotted key=value overrides."""

from __future__ import annotations

import argparse
from typing import Callable, TypeVar

import ray

from r4t.config import load_config

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


def stage_main(argv: list[str] | None, doc: str, stage: str, schema: type[T], run: Callable[[T], dict],
               report: Callable[[dict], str]) -> int:
    """`python -m r4t.jobs.<stage> [--config jobs/<stage>.yaml] [key=value ...]`: run the stage, print its report."""
    parser = argparse.ArgumentParser(prog=f"python -m r4t.jobs.{stage}", description=doc.splitlines()[0])
    add_config_args(parser, f"jobs/{stage}.yaml")
    print(report(run(config_from_args(schema, parser.parse_args(argv)))))
    return 0
