"""`r4t demo`: the whole pipeline on the embedded default, one stage after another.

    data → index → baselines → RL (warm start + Soft-GRPO) → synthesis → diffusion (Ray Train) → eval

Every stage reuses what an earlier run finished (manifests, checkpoints, shards, the exported model), so a
rerun after a crash or a kill resumes at the stage that was running. Ends with the results table of every
method, the fan-out latencies and the path of the report.
"""

from __future__ import annotations

import time

from r4t.config import DemoConfig
from r4t.errors import ConfigError
from r4t.jobs import data, diffusion, rl, synth
from r4t.jobs import eval as eval_job
from r4t.jobs.common import ensure_ray


def only_dataset(cfg: DemoConfig, name: str | None) -> DemoConfig:
    """The demo on one of the config's datasets (`r4t demo --dataset NAME`)."""
    if name is None:
        return cfg
    kept = [s for s in cfg.datasets if s.name == name]
    if not kept:
        raise ConfigError(f"--dataset {name!r}: not among the config's datasets {[s.name for s in cfg.datasets]}")
    cfg.datasets = kept
    return cfg


def run(cfg: DemoConfig, progress: bool = True) -> dict:
    ensure_ray()
    stages = (("data, index and baselines", lambda: data.run(cfg.prepare_config(), progress)),
              ("RL", lambda: rl.run(cfg.rl_config(), progress)),
              ("synthesis", lambda: synth.run(cfg.synth_config(), progress)),
              ("diffusion training", lambda: diffusion.run(cfg.diffusion_config(), progress)),
              ("evaluation", lambda: eval_job.run(cfg.eval_config(), progress)))
    seconds, out = {}, {}
    for name, stage in stages:
        start = time.perf_counter()
        print(f"\n== r4t demo: {name}", flush=True)
        out[name] = stage()
        seconds[name] = time.perf_counter() - start
        print(f"== r4t demo: {name} done in {seconds[name]:.0f} s", flush=True)
    return {"eval": out["evaluation"], "seconds": seconds}


def report(out: dict) -> str:
    ev, seconds = out["eval"], out["seconds"]
    times = ", ".join(f"{name} {s:.0f} s" for name, s in seconds.items())
    return (f"Held-out results (mean [95% bootstrap interval over queries]):\n\n{ev['table']}\n\n"
            f"Finished in {sum(seconds.values()):.0f} s ({times}).\nreport: {ev['report']}")
