"""Every stage of one pipeline config, one after another (jobs/pipeline.yaml on a cluster, jobs/demo.yaml here).

    data → index → baselines → RL (warm start + Soft-GRPO) → synthesis → diffusion (Ray Train) → eval

    python -m r4t.jobs.pipeline --config jobs/pipeline.yaml [--stage rl] [key=value ...]
    r4t demo [--dataset NAME]            (the same on jobs/demo.yaml)

Every stage reuses what an earlier run finished (manifests, checkpoints, shards, the exported model), so a
rerun after a crash or a kill resumes at the stage that was running. --stage runs one stage of the file (a
KubeRay RayJob per stage does). Ends with the results table of every method, the fan-out latencies and the path
of the report.
"""

from __future__ import annotations

import argparse
import sys
import time

from r4t.config import PipelineConfig
from r4t.errors import ConfigError, reporting_errors
from r4t.jobs import data, diffusion, rl, synth
from r4t.jobs import eval as eval_job
from r4t.jobs.common import add_config_args, config_from_args, ensure_ray

STAGES = {
    "data": ("data, index and baselines", lambda cfg, progress: data.run(cfg.prepare_config(), progress)),
    "rl": ("RL", lambda cfg, progress: rl.run(cfg.rl_config(), progress)),
    "synth": ("synthesis", lambda cfg, progress: synth.run(cfg.synth_config(), progress)),
    "diffusion": ("diffusion training", lambda cfg, progress: diffusion.run(cfg.diffusion_config(), progress)),
    "eval": ("evaluation", lambda cfg, progress: eval_job.run(cfg.eval_config(), progress)),
}


def only_dataset(cfg: PipelineConfig, name: str | None) -> PipelineConfig:
    """The pipeline on one of the config's datasets (`r4t demo --dataset NAME`)."""
    if name is None:
        return cfg
    kept = [s for s in cfg.datasets if s.name == name]
    if not kept:
        raise ConfigError(f"--dataset {name!r}: not among the config's datasets {[s.name for s in cfg.datasets]}")
    cfg.datasets = kept
    return cfg


def run(cfg: PipelineConfig, progress: bool = True, stages: list[str] | None = None) -> dict:
    unknown = [s for s in stages or [] if s not in STAGES]
    if unknown:
        raise ConfigError(f"--stage {unknown[0]!r}: not a stage; stages: {', '.join(STAGES)}")
    ensure_ray()
    seconds, out = {}, {}
    for key in stages or list(STAGES):
        name, stage = STAGES[key]
        start = time.perf_counter()
        print(f"\n== r4t pipeline: {name}", flush=True)
        out[key] = stage(cfg, progress)
        seconds[name] = time.perf_counter() - start
        print(f"== r4t pipeline: {name} done in {seconds[name]:.0f} s", flush=True)
    return {"eval": out.get("eval"), "seconds": seconds}


def report(out: dict) -> str:
    ev, seconds = out["eval"], out["seconds"]
    times = ", ".join(f"{name} {s:.0f} s" for name, s in seconds.items())
    if ev is None:
        return f"Finished in {sum(seconds.values()):.0f} s ({times})."
    return (f"Held-out results (mean [95% bootstrap interval over queries]):\n\n{ev['table']}\n\n"
            f"Finished in {sum(seconds.values()):.0f} s ({times}).\nreport: {ev['report']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m r4t.jobs.pipeline", description=__doc__.splitlines()[0])
    add_config_args(parser, "jobs/pipeline.yaml")
    parser.add_argument("--stage", action="append", choices=list(STAGES),
                        help="run only this stage (repeatable; default: all, in order)")
    parser.add_argument("--dataset", help="only this dataset of the config")
    args = parser.parse_args(argv)
    return reporting_errors(lambda: print(report(run(only_dataset(config_from_args(PipelineConfig, args),
                                                                  args.dataset), stages=args.stage))), parser.prog)


if __name__ == "__main__":
    sys.exit(main())
