"""`r4t submit STAGE`: a stage (or the whole pipeline) as a Ray job, through `ray job submit` itself.

    r4t submit rl --address http://head:8265 rl.steps=200
      = ray job submit --address http://head:8265 --runtime-env jobs/runtime_env.yaml --submission-id r4t-rl-... \
            -- python -m r4t.jobs.rl --config jobs/rl.yaml rl.steps=200

The config and overrides are checked here first, so a typo fails in a second on the laptop instead of minutes
later on the cluster. The job runs in the shipped working directory (this checkout, see jobs/runtime_env.yaml),
so the config file must sit inside it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from r4t.config import (DiffusionConfig, EvalConfig, PipelineConfig, PrepareConfig, RLConfig, RLlibConfig, SynthConfig,
                        load_config)
from r4t.errors import ConfigError

SCHEMAS = {"data": PrepareConfig, "rl": RLConfig, "rllib": RLlibConfig, "synth": SynthConfig,
           "diffusion": DiffusionConfig, "eval": EvalConfig, "pipeline": PipelineConfig}
DEFAULT_ADDRESS = "http://127.0.0.1:8265"


def submit_command(stage: str, config: str | None, overrides: list[str], address: str | None, runtime_env: str,
                   submission_id: str | None, wait: bool, pipeline_stages: list[str] | None = None) -> list[str]:
    """Validate the job's config, then build the `ray job submit` command line that runs it."""
    if stage not in SCHEMAS:
        raise ConfigError(f"stage {stage!r}: not one of {', '.join(SCHEMAS)}")
    config = config or f"jobs/{stage}.yaml"
    load_config(SCHEMAS[stage], config, overrides)
    rel = Path(os.path.relpath(Path(config).resolve(), Path.cwd()))
    if rel.parts[0] == "..":
        raise ConfigError(f"--config {config}: outside the working directory {Path.cwd()} that the job ships; "
                          "run r4t submit from the repository root with a config inside it")
    if not Path(runtime_env).is_file():
        raise ConfigError(f"--runtime-env {runtime_env}: file not found")
    ray = shutil.which("ray", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if ray is None:
        raise ConfigError("the `ray` command is not installed (pip install 'ray[default]')")
    entry = ["python", "-m", f"r4t.jobs.{stage}", "--config", rel.as_posix()]
    entry += [arg for s in pipeline_stages or [] for arg in ("--stage", s)]
    cmd = [ray, "job", "submit", "--address", address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS,
           "--runtime-env", runtime_env,
           "--submission-id", submission_id or f"r4t-{stage}-{time.strftime('%Y%m%d-%H%M%S')}"]
    return cmd + ([] if wait else ["--no-wait"]) + ["--", *entry, *overrides]


def submit_env(environ: dict[str, str]) -> dict[str, str]:
    """The environment `ray job submit` runs in. A cluster started with `ray start` (Ray >= 2.59) requires a token
    and keeps it in ~/.ray/auth_token, but Ray's job client sends it only when RAY_AUTH_MODE=token is set: with a
    token at hand and no mode chosen, choose token mode, so submitting to the cluster on this machine just works."""
    if "RAY_AUTH_MODE" in environ:
        return dict(environ)
    token_file = Path(environ.get("RAY_AUTH_TOKEN_PATH") or Path(environ.get("HOME", "~")).expanduser() / ".ray"
                      / "auth_token")
    if environ.get("RAY_AUTH_TOKEN") or token_file.is_file():
        return {**environ, "RAY_AUTH_MODE": "token"}
    return dict(environ)


AUTH_HINT = ("r4t submit: if Ray said \"Authentication required\", the cluster wants its token: on the head run "
             "`ray get-auth-token`, then here `export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=<that token>` (or copy the "
             "head's ~/.ray/auth_token to this machine) and submit again")


def submit(cmd: list[str], dry_run: bool) -> int:
    env = submit_env(dict(os.environ))
    chosen = "RAY_AUTH_MODE" not in os.environ and env.get("RAY_AUTH_MODE") == "token"
    print("$ " + ("RAY_AUTH_MODE=token " if chosen else "") + shlex.join(cmd), flush=True)
    if dry_run:
        return 0
    code = subprocess.run(cmd, env=env).returncode
    if code != 0 and env.get("RAY_AUTH_MODE") != "token":
        print(AUTH_HINT, file=sys.stderr)
    return code
