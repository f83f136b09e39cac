"""The synthesis driver: plan shards over the queries, skip the finished ones, run the rest on a pool of
SynthWorker actors, then write the manifest (last, so a reader never takes a partial synthesis for whole).

A shard is a fixed list of queries with a fixed sampling seed, so the rows of a shard do not depend on which
actor ran it or on whether the run was interrupted: a killed run, rerun, ends with exactly the rows of an
uninterrupted one.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import ray
from ray.exceptions import RayActorError, RayTaskError
from tqdm import tqdm

from r4t.config import ActorsConfig, SynthSettings
from r4t.errors import DataError, R4TError
from r4t.io import read_json, write_json
from r4t.metrics import DashboardGauges
from r4t.synth.targets import MANIFEST_FILE, finished_shards, shard_identity, shard_path, target_arrays
from r4t.synth.worker import Generation, Shard, SynthWorker

IDENTITY_FILE = "identity.json"
GAUGES = DashboardGauges("r4t_synth", ("rows_per_s", "rows", "malformed_frac", "reward_mean"), ("dataset", "run"),
                         "target synthesis")


def plan_shards(queries: dict[str, tuple[list[str], list[str], list[str], list[list[str]], list]],
                settings: SynthSettings, seed: int, out: Path) -> list[Shard]:
    """queries: split → (query ids, texts, prompts, listed items, reference sets). Shards of `queries_per_shard`
    in table order, with absolute paths (an actor's working directory need not be the driver's)."""
    shards, out = [], out.resolve()
    for split_no, (split, (ids, texts, prompts, listed, refs)) in enumerate(queries.items()):
        for n, start in enumerate(range(0, len(ids), settings.queries_per_shard)):
            end = start + settings.queries_per_shard
            shards.append(Shard(split, n, ids[start:end], texts[start:end], prompts[start:end], listed[start:end],
                                refs[start:end],
                                int(np.random.default_rng([seed, split_no, n]).integers(2**20)),
                                str(shard_path(out, split, n))))
    return shards


def check_identity(out: Path, identity: dict) -> None:
    """A synthesis folder belongs to one identity; reusing it for another would mix targets."""
    path = out / IDENTITY_FILE
    if not path.is_file():
        write_json(path, identity)
        return
    saved = read_json(path)
    for key in sorted(set(saved) | set(identity)):
        if saved.get(key) != identity.get(key):
            raise DataError(f"{out}: holds targets of a different synthesis (field '{key}' is {saved.get(key)!r}, "
                            f"this run has {identity.get(key)!r}); use another `name` or remove the folder")


def pending_shards(shards: list[Shard], identity: dict) -> list[Shard]:
    todo = []
    for shard in shards:
        path = Path(shard.path)
        if not path.exists():
            todo.append(shard)
            continue
        found = shard_identity(path)
        if found != identity:
            raise DataError(f"{path}: not a finished shard of this synthesis "
                            f"({'unreadable' if found is None else 'different identity'}); remove it to redo it")
    return todo


def run_shards(todo: list[Shard], generation: Generation, scorer_factory, settings: SynthSettings,
               identity: dict, workers: ActorsConfig, tags: dict, progress: bool) -> list[dict]:
    """Run shards on up to `workers.count` actors, one shard in flight per actor. → per-shard statistics."""
    if not todo:
        return []
    # A worker that dies (OOM-killed, preempted node) is restarted and its shard run again: a shard's file appears
    # under its name only when whole and its draws depend only on (seed, split, index), so the retry writes it once.
    # Its call is retried for as long as the actor can come back (max_task_retries=-1): a lost node makes an actor
    # unreachable for a while before it is declared dead and restarted, and each failed try would use up a retry
    # (seen: two retries gone within 4 s of a node's death). Spread over the nodes, a lost node costs fewest workers.
    actor_cls = ray.remote(SynthWorker).options(num_cpus=workers.cpus, num_gpus=workers.gpus,
                                                resources=dict(workers.resources), max_restarts=workers.restarts,
                                                max_task_retries=-1, scheduling_strategy="SPREAD")
    actors = [actor_cls.remote(generation, scorer_factory, settings, identity, workers.torch_threads)
              for _ in range(min(workers.count, len(todo)))]
    queue, in_flight, stats = list(todo), {}, []
    bar = tqdm(total=len(todo), desc=f"synthesis {tags['dataset']}", unit="shard", disable=not progress)
    start = time.perf_counter()
    try:
        for a, actor in enumerate(actors):
            shard = queue.pop(0)
            in_flight[actor.run.remote(shard)] = (a, shard, time.monotonic())
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=5.0)
            for ref in ready:
                a, shard, _ = in_flight.pop(ref)
                stats.append(_get(ref, a, shard, workers.restarts))
                bar.update(1)
                rows = sum(s["rows"] for s in stats)
                GAUGES.set({"rows_per_s": rows / (time.perf_counter() - start), "rows": rows,
                            "malformed_frac": sum(s["malformed"] for s in stats) / sum(s["samples"] for s in stats),
                            "reward_mean": sum(s["reward_sum"] for s in stats) / max(rows, 1)}, tags)
                if queue:
                    nxt = queue.pop(0)
                    in_flight[actors[a].run.remote(nxt)] = (a, nxt, time.monotonic())
            for ref, (a, shard, since) in in_flight.items():
                if time.monotonic() - since > settings.timeout_s:
                    raise R4TError(f"synthesis worker {a}: shard {shard.split}/{shard.index} did not finish within "
                                   f"{settings.timeout_s:.0f} s (synth.timeout_s)")
    finally:
        bar.close()
        for actor in actors:
            ray.kill(actor)
    return stats


def _get(ref, actor: int, shard: Shard, restarts: int) -> dict:
    try:
        return ray.get(ref)
    except RayActorError as e:
        raise R4TError(f"synthesis worker {actor} died on shard {shard.split}/{shard.index} after {restarts} "
                       f"restarts (the workers' `restarts`; a rerun resumes from the finished shards): "
                       f"{str(e).splitlines()[0]}") from None
    except RayTaskError as e:
        raise R4TError(f"synthesis worker {actor} failed on shard {shard.split}/{shard.index}: {e.cause!r}") from None


def write_manifest(out: Path, identity: dict, splits: list[str], run_stats: list[dict], seconds: float) -> dict:
    """Count every finished shard, measure sigma_data on the first split (the training split), write the manifest."""
    manifest: dict = {"identity": identity, "splits": {}}
    for n, split in enumerate(splits):
        shards = {p.name: pq.read_metadata(p).num_rows for p in finished_shards(out, split)}
        entry = {"shards": shards, "rows": sum(shards.values())}
        sum_sq, count, rewards = 0.0, 0, []
        for name in shards:
            table = pq.read_table(out / "targets" / split / name, columns=["target", "n_valid", "reward"])
            if table.num_rows:
                x, valid = target_arrays(table)
                sum_sq += float(np.square(x[valid].astype(np.float64)).sum())
                count += int(valid.sum()) * x.shape[-1]
                rewards.append(table.column("reward").to_numpy())
        if not count:
            raise DataError(f"{out}: split {split!r} produced no target rows (every fan-out malformed?)")
        entry["reward_mean"] = float(np.concatenate(rewards).mean())
        if n == 0:
            manifest["sigma_data"] = math.sqrt(sum_sq / count)  # RMS about 0: the VE process noises around 0
            manifest["sigma_data_split"] = split
        manifest["splits"][split] = entry
    if (out / MANIFEST_FILE).is_file() and not run_stats:  # nothing new: keep the previous run's throughput
        manifest["last_run"] = read_json(out / MANIFEST_FILE).get("last_run")
    if run_stats:
        rows, samples = sum(s["rows"] for s in run_stats), sum(s["samples"] for s in run_stats)
        manifest["last_run"] = {"shards": len(run_stats), "rows": rows, "samples": samples, "seconds": seconds,
                                "rows_per_s": rows / seconds, "malformed_frac": sum(s["malformed"] for s in run_stats)
                                / samples}
    write_json(out / MANIFEST_FILE, manifest)
    with (out / "metrics.jsonl").open("a") as f:
        for s in run_stats:
            f.write(json.dumps(s) + "\n")
    return manifest
