"""Every YAML under clusters/, jobs/ and serve_configs/ is parsed and validated: job configs against r4t's schemas,
Serve configs against Serve's schema, launcher files against Ray's cluster schema, KubeRay manifests for their
required fields. One Ray version is pinned everywhere."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from r4t.config import (DiffusionConfig, EvalConfig, PipelineConfig, PrepareConfig, RLConfig, RLlibConfig,
                        SynthConfig, load_config)

REPO = Path(__file__).resolve().parents[1]
JOB_SCHEMAS = {"data.yaml": PrepareConfig, "rl.yaml": RLConfig, "rllib.yaml": RLlibConfig, "synth.yaml": SynthConfig,
               "diffusion.yaml": DiffusionConfig, "eval.yaml": EvalConfig, "demo.yaml": PipelineConfig,
               "pipeline.yaml": PipelineConfig}
LAUNCHER_FILES = ("clusters/local.yaml", "clusters/aws-gpu.yaml")
SERVE_DEPLOYMENTS = {"composed": {"Ingress", "QueryEncoder", "Denoiser", "CatalogIndex"},
                     "fused": {"Ingress", "Retrieval"}}


def _ray_pin() -> str:
    pyproject = (REPO / "pyproject.toml").read_text()
    return re.search(r'"ray\[[a-z,]+\]==([0-9.]+)"', pyproject).group(1)


def _yaml_files() -> list[str]:
    return sorted(p.relative_to(REPO).as_posix() for d in ("clusters", "jobs", "serve_configs")
                  for p in (REPO / d).rglob("*.y*ml"))


def _load(rel: str) -> dict:
    return yaml.safe_load((REPO / rel).read_text())


def test_every_deployment_yaml_has_a_validator() -> None:
    covered = ({f"jobs/{n}" for n in JOB_SCHEMAS} | {"jobs/runtime_env.yaml"} | set(LAUNCHER_FILES)
               | {f"serve_configs/{n}" for n in ("local.yaml", "prod.yaml")}
               | {p for p in _yaml_files() if p.startswith("clusters/kuberay/")})
    assert set(_yaml_files()) == covered  # a new YAML file needs a validator below


@pytest.mark.parametrize("name", sorted(JOB_SCHEMAS))
def test_job_configs_load_with_their_schema(name: str) -> None:
    assert isinstance(load_config(JOB_SCHEMAS[name], REPO / "jobs" / name), JOB_SCHEMAS[name])


def test_the_cluster_pipeline_is_sized_for_gpus_and_keeps_artifacts_on_shared_storage() -> None:
    cfg = load_config(PipelineConfig, REPO / "jobs" / "pipeline.yaml")
    assert cfg.run_dir.startswith("s3://")
    assert cfg.policy.backend == "vllm" and cfg.rl_workers.rollout_gpus == 1 and cfg.train_workers.use_gpu
    assert cfg.model.preset == "paper" and cfg.synth.samples == 128  # the paper
    assert cfg.rl_workers.reward_resources == {"scoring": 1}


def test_runtime_env_is_valid_for_ray_and_ships_no_local_state() -> None:
    from ray.runtime_env import RuntimeEnv

    env = _load("jobs/runtime_env.yaml")
    RuntimeEnv(**env)  # raises on an unknown field or a malformed value
    assert env["working_dir"] == "."
    assert {".venv/", "runs/", ".git/"} <= set(env["excludes"])
    assert env["env_vars"]["R4T_MIRROR"] and env["env_vars"]["HF_HUB_OFFLINE"] == "1"


@pytest.mark.parametrize("name", ["local.yaml", "prod.yaml"])
def test_serve_configs_are_valid_for_serve_and_name_the_apps_deployments(name: str) -> None:
    import importlib

    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(_load(f"serve_configs/{name}"))
    [app] = config.applications
    module, attr = app.import_path.split(":")
    assert callable(getattr(importlib.import_module(module), attr))
    assert {d.name for d in app.deployments} == SERVE_DEPLOYMENTS[app.args.get("layout", "composed")]
    ingress = next(d for d in app.deployments if d.name == "Ingress")  # where requests are micro-batched
    assert set(ingress.user_config) == {"max_batch_size", "batch_wait_timeout_s"}
    assert ingress.max_ongoing_requests > ingress.user_config["max_batch_size"]  # or batches never fill


@pytest.mark.parametrize("rel", LAUNCHER_FILES)
def test_launcher_files_pass_rays_cluster_schema_and_pin_its_version(rel: str) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _load(rel)
    validate_config(prepare_config(raw))  # Ray's ray-schema.json, after Ray fills in its provider defaults
    text = (REPO / rel).read_text()
    pins = set(re.findall(r"ray(?:\[[a-z,]+\])?==([0-9.]+)", text)) | set(re.findall(r"rayproject/ray:([0-9.]+)-",
                                                                                       text))
    assert pins == {_ray_pin()}
    assert any("r4t[gpu]" in c for c in raw["setup_commands"])
    assert any("--head" in c and "--dashboard-host=0.0.0.0" in c for c in raw["head_start_ray_commands"])


def test_the_gpu_cluster_offers_what_the_pipeline_asks_for() -> None:
    types = _load("clusters/aws-gpu.yaml")["available_node_types"]
    offered = {name for t in types.values() for name in t["resources"]}
    cfg = load_config(PipelineConfig, REPO / "jobs" / "pipeline.yaml")
    assert set(cfg.rl_workers.reward_resources) <= offered
    assert {"gpu_group", "scoring"} <= offered
    # every stage's GPUs fit the GPU group at its largest (one GPU per node), or its actors would wait forever
    gpus = types["gpu_group"]["max_workers"]
    w = cfg.rl_workers
    assert w.rollout * w.rollout_gpus + w.learner_gpus <= gpus
    assert cfg.synth_workers.count * cfg.synth_workers.gpus <= gpus
    assert cfg.train_workers.count <= gpus and cfg.train_workers.use_gpu


def _kuberay() -> dict[str, dict]:
    return {p: _load(p) for p in _yaml_files() if p.startswith("clusters/kuberay/")}


def _containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def _cluster_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterConfig"]


def test_kuberay_manifests_have_their_required_fields_and_the_pinned_ray() -> None:
    docs = _kuberay()
    assert sorted(d["kind"] for d in docs.values()) == ["RayCluster", "RayJob", "RayJob", "RayJob", "RayService"]
    for rel, doc in docs.items():
        assert doc["apiVersion"] == "ray.io/v1" and doc["metadata"]["name"], rel
        if doc["kind"] == "RayJob":
            continue
        spec = _cluster_spec(doc)
        assert spec["rayVersion"] == _ray_pin(), rel
        groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
        for group in groups:
            assert "rayStartParams" in group, rel
            for c in _containers(group["template"]):
                assert c["name"] and c["image"].endswith(f"ray{_ray_pin()}-gpu"), (rel, c["image"])
                assert {"name": "R4T_MIRROR", "value": "/tmp/r4t-mirror"} in c["env"], rel
        for g in spec["workerGroupSpecs"]:
            assert g["groupName"] and g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], rel
    dockerfile = (REPO / "clusters" / "docker" / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{_ray_pin()}-" in dockerfile


def test_each_training_stage_has_a_rayjob_that_runs_it_on_the_raycluster() -> None:
    docs = _kuberay()
    [cluster] = [d for d in docs.values() if d["kind"] == "RayCluster"]
    runtime_env = _load("jobs/runtime_env.yaml")
    stages = {}
    for doc in (d for d in docs.values() if d["kind"] == "RayJob"):
        spec = doc["spec"]
        assert spec["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
        argv = shlex.split(spec["entrypoint"])
        assert argv[:3] == ["python", "-m", "r4t.jobs.pipeline"]
        config = argv[argv.index("--config") + 1]
        load_config(PipelineConfig, REPO / config)  # the file exists and validates
        stages[argv[argv.index("--stage") + 1]] = doc["metadata"]["name"]
        assert yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"] == runtime_env["env_vars"]
    assert set(stages) == {"rl", "synth", "diffusion"}
    # the CPU group offers what the pipeline's reward workers ask for
    offered = {k for g in cluster["spec"]["workerGroupSpecs"]
               for k in yaml.safe_load(yaml.safe_load(g["rayStartParams"].get("resources", '"{}"')))}
    assert set(load_config(PipelineConfig, REPO / "jobs" / "pipeline.yaml").rl_workers.reward_resources) <= offered


def test_the_rayservice_serves_exactly_the_prod_serve_config() -> None:
    [service] = [d for d in _kuberay().values() if d["kind"] == "RayService"]
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == _load("serve_configs/prod.yaml")
    api_key_env = _load("serve_configs/prod.yaml")["applications"][0]["args"]["api_key_env"]
    spec = _cluster_spec(service)
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:  # Ingress replicas may land on any pod
        assert any(e["name"] == api_key_env for c in _containers(group["template"]) for e in c["env"])
