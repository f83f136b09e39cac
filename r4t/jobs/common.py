"""Argument handling shared by every stage entry point: --config FILE plus dotted key=value overrides."""

from __future__ import annotations

import argparse
import functools
import secrets
import signal
import threading
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import ray

from r4t.catalog import PreparedCatalog, prepare_catalog
from r4t.config import DatasetSpec, RunConfig, load_config
from r4t.embed import TextEncoder
from r4t.errors import ConfigError, Stopped, reporting_errors
from r4t.storage import fetch, is_uri, publish, run_root

T = TypeVar("T")


def add_config_args(parser: argparse.ArgumentParser, default_config: str | None) -> None:
    parser.add_argument("--config", default=default_config, help=f"YAML job config (default: {default_config})")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. index.factory=IVF256,Flat")


def config_from_args(schema: type[T], args: argparse.Namespace) -> T:
    return load_config(schema, args.config, args.overrides)


def ensure_ray(run_dir: str | None = None) -> None:
    """Join the cluster of `ray job submit` (RAY_ADDRESS) or a running one; otherwise start a local Ray. With
    run_dir, check that every node of the cluster can reach it before any work starts."""
    if not ray.is_initialized():
        ray.init(log_to_driver=False, include_dashboard=None)
        stop_on_sigterm()
    if run_dir is not None:
        check_shared_run_dir(run_dir)


def _raise_stopped(signum: int, frame) -> None:
    raise Stopped(signal.Signals(signum).name)


def stop_on_sigterm() -> None:
    """SIGTERM raises Stopped in the main thread (r4t.errors.reporting_errors ends the entry point with status 0).
    Installed after ray.init, whose own handler would print a stack and kill the process mid-write."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_stopped)


@ray.remote(num_cpus=0)
def _sees(path: str, token: str) -> tuple[str, bool]:
    marker = Path(path)
    return ray.get_runtime_context().get_node_id(), marker.is_file() and marker.read_text() == token


def probe_nodes(marker: str, token: str) -> dict[str, bool]:
    """Node address → whether a zero-CPU task pinned to that node reads `token` from `marker`."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
    if len(nodes) < 2:
        return {}
    seen = ray.get([_sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                    .remote(marker, token) for node in nodes], timeout=120)
    return {f"{nodes[node]} ({node[:8]})": ok for node, ok in seen}


def check_shared_run_dir(run_dir: str, probe: Callable[[str, str], dict[str, bool]] = probe_nodes) -> None:
    """Actors and Ray Train workers on any node read and write the run directory, so on a multi-node cluster a
    local run_dir must be shared storage (the same NFS mount on every node). A URI is always shared. Probe: write a
    random token beside the artifacts and have a task on every alive node read it back."""
    if is_uri(run_dir):
        return
    marker = Path(run_dir).resolve() / f".shared-probe-{secrets.token_hex(4)}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    marker.write_text(token)
    try:
        seen = probe(str(marker), token)
    finally:
        marker.unlink(missing_ok=True)
    blind = [node for node, ok in seen.items() if not ok]
    if blind:
        raise ConfigError(
            f"run_dir={run_dir!r}: a local path that node(s) {', '.join(blind)} of this {len(seen)}-node cluster "
            "cannot see; actors and multi-node Ray Train need shared storage: mount it on every node at the same "
            "path (NFS), or use a URI (s3://bucket/path, gs://..., abfs://...)")


def require_resources(key: str, resources: dict[str, float]) -> None:
    """Actors that ask for a custom resource no node has would wait forever: say so before creating them."""
    have = ray.cluster_resources()
    missing = {name: amount for name, amount in resources.items() if have.get(name, 0) < amount}
    if missing:
        raise ConfigError(f"{key}={dict(resources)}: no node of this cluster offers {missing} (it has "
                          f"{ {k: v for k, v in have.items() if 'node:' not in k} }); start a node with "
                          "`ray start --resources` or add the resource to a worker group, or drop the key")


def synced_stage(run: Callable) -> Callable:
    """For a URI run_dir, a stage works in this node's mirror (r4t.storage): fetch the datasets' folders first,
    publish the run directory after, also when the stage fails (its checkpoints and shards are kept for the rerun).
    For a local run_dir this changes nothing."""
    @functools.wraps(run)
    def wrapper(cfg: RunConfig, *args, **kwargs):
        if not is_uri(cfg.run_dir):
            return run(cfg, *args, **kwargs)
        root = run_root(cfg.run_dir)
        for spec in cfg.datasets:
            fetch(root / spec.name)
        try:
            return run(cfg, *args, **kwargs)
        finally:
            publish(root)
    return wrapper


def stage_catalogs(cfg: RunConfig, progress: bool, resources: dict[str, dict[str, float]] | None = None
                   ) -> Iterator[tuple[DatasetSpec, PreparedCatalog, Path, TextEncoder]]:
    """How a stage that runs on Ray starts: join or start Ray (checking that every node reaches run_dir and offers
    the custom `resources` its workers ask for, by config key), load the encoder, then per dataset its prepared
    catalog and its folder under run_dir on this node. → (spec, catalog, folder, encoder) per dataset."""
    ensure_ray(cfg.run_dir)
    for key, wanted in (resources or {}).items():
        require_resources(key, wanted)
    encoder = TextEncoder(cfg.embed.model, cfg.embed.device, cfg.embed.batch_size)
    for spec in cfg.datasets:
        yield spec, prepare_catalog(spec, cfg.run_dir, encoder, cfg.index, cfg.seed, progress), \
            run_root(cfg.run_dir) / spec.name, encoder


def stage_main(argv: list[str] | None, doc: str, stage: str, schema: type[T], run: Callable[[T], dict],
               report: Callable[[dict], str]) -> int:
    """`python -m r4t.jobs.<stage> [--config jobs/<stage>.yaml] [key=value ...]`: run the stage, print its report."""
    parser = argparse.ArgumentParser(prog=f"python -m r4t.jobs.{stage}", description=doc.splitlines()[0])
    add_config_args(parser, f"jobs/{stage}.yaml")
    args = parser.parse_args(argv)
    return reporting_errors(lambda: print(report(run(config_from_args(schema, args)))), parser.prog)
