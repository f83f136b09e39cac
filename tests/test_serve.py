"""The serving app over real HTTP on 127.0.0.1: a grounded set comes back; bad requests are 4xx, never 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import torch

from r4t.config import DatasetSpec, IndexConfig
from r4t.diffusion.checkpoint import export_model
from r4t.diffusion.denoiser import DenoiserConfig, EDMDenoiser
from r4t.errors import ConfigError, ManifestMismatch
from r4t.index import MANIFEST_FILE
from r4t.io import read_json, sha256_file


def tiny_artifacts(run_dir: Path, source: Path, encoder, **manifest_changes) -> Path:
    """Data and index of the tiny dataset plus an (untrained) exported denoiser whose manifest matches them."""
    from r4t.catalog import prepare_catalog

    cat = prepare_catalog(DatasetSpec("tiny", "r4t", str(source)), run_dir, encoder, IndexConfig(), progress=False)
    index = cat.index.manifest
    torch.manual_seed(0)
    model = EDMDenoiser(DenoiserConfig(dim=cat.index.dim, rows=4, hidden=32, mlp=64, heads=2, layers=1, context_items=4,
                                       context_per_category=1, row_slots=True), 0.05)  # as the job files train it
    manifest = {"encoder": index["encoder"], "encoder_hash": index["weights_hash"],
                "catalog_hash": index["catalog_hash"],
                "index_manifest_sha256": sha256_file(run_dir / "tiny" / "index" / MANIFEST_FILE),
                "task": "oar", "policy_hash": "0" * 64, **manifest_changes}
    export_model(run_dir / "tiny" / "diffusion" / "model", model, manifest)
    return run_dir


@contextmanager
def tiny_app(run_dir: Path, **args) -> Iterator[httpx.Client]:
    """The app on the tiny artifacts on a free loopback port (short health-check period), as a client; Serve is shut
    down on the way out."""
    from r4t.serve.local import loopback_serve, run_app

    with loopback_serve() as base_url:
        run_app({"run_dir": str(run_dir), "dataset": "tiny", "sampler": {"steps": 4}, "health_check_period_s": 1,
                 **args})
        with httpx.Client(base_url=base_url, timeout=60) as client:
            client.run_dir = run_dir
            yield client


@pytest.fixture(scope="module")
def served(ray_local, tmp_path_factory, tiny_source, encoder):
    with tiny_app(tiny_artifacts(tmp_path_factory.mktemp("serve"), tiny_source, encoder)) as client:
        yield client


def test_a_query_gets_k_distinct_grounded_items(served, tiny_catalog):
    r = served.post("/v1/fanout", json={"query": "beach vacation outfit", "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    ids = [i["id"] for i in body["items"]]
    assert len(ids) == len(set(ids)) == 5
    text_of = dict(zip([f"i{n}" for n in range(len(tiny_catalog.texts))], tiny_catalog.texts))
    assert all(text_of[i["id"]] == i["text"] for i in body["items"])
    assert 1 <= body["metrics"]["vendi"] <= 5 and set(body["timing_ms"]) >= {"encode", "generate", "ground"}
    assert body["versions"]["catalog"] and body["method"] == "R4T-Diffusion"
    seeded = [served.post("/v1/fanout", json={"query": "winter look", "seed": 7}).json()["items"] for _ in range(2)]
    assert seeded[0] == seeded[1]  # a seed pins the sample
    nearest = served.post("/v1/fanout", json={"query": "red boots", "k": 3, "method": "no fan-out"}).json()
    assert len(nearest["items"]) == 3
    batch = served.post("/v1/fanout/batch", json={"requests": [{"query": "a"}, {"query": "b", "k": 2}]})
    assert batch.status_code == 200 and [len(s["items"]) for s in batch.json()] == [10, 2]


def test_health_info_and_openapi(served):
    assert served.get("/healthz").json() == {"status": "ok"}
    info = served.get("/v1/info").json()
    assert info["manifests"]["model"]["dim"] == 384 and info["manifests"]["index"]["count"] == 40
    assert "/v1/fanout" in served.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("body, status, names", [
    ({"query": ""}, 422, "query"),
    ({"query": "   "}, 422, "blank"),
    ({"query": "x" * 513}, 422, "query"),
    ({"query": "q", "k": 0}, 422, "k"),
    ({"query": "q", "k": 101}, 422, "k"),
    ({"query": "q", "k": "5"}, 422, "k"),
    ({"query": 5}, 422, "query"),
    ({"query": "q", "method": "magic"}, 422, "method"),
    ({"query": "q", "steps": 0}, 422, "steps"),
    ({"query": "q", "guidance": -1}, 422, "guidance"),
    ({"query": "q", "extra": 1}, 422, "extra"),
    ({}, 422, "query"),
    ({"requests": []}, 422, "query"),
])
def test_bad_requests_are_4xx_naming_the_problem(served, body, status, names):
    r = served.post("/v1/fanout", json=body)
    assert r.status_code == status and names in r.json()["error"], r.text


@pytest.mark.parametrize("content, status, names", [
    (b"{not json", 400, "not valid JSON"),
    (b'{"query": "\xff\xfe"}', 400, "UTF-8"),
    (b'{"query": "' + b"a" * 70000 + b'"}', 413, "limit"),
    # found by r4t bench fuzz, both were 500s: json.loads recursing past Python's limit, and an integer past
    # Python's 4300-digit conversion limit (a ValueError that is not a JSONDecodeError)
    (b'{"query": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "nested too deeply"),
    (b'{"query": "red boots", "steps": ' + b"1" * 5000 + b"}", 400, "not valid JSON"),
    (b'{"query": ' + b'{"a":' * 20 + b"1" + b"}" * 21, 400, "nested 21 levels deep"),
])
def test_malformed_bodies_are_4xx(served, content, status, names):
    r = served.post("/v1/fanout", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status and names in r.json()["error"], r.text


def test_fuzzed_requests_never_get_a_5xx(served):
    """Every kind of mutation r4t.serve.fuzz makes, one request at a time, is answered below 500."""
    from r4t.serve.fuzz import fuzz_cases

    kinds = set()
    for case in fuzz_cases(seed=1, n=120):
        r = served.request(case.method, case.path, content=case.content, headers=case.headers)
        assert r.status_code < 500, (case.describe(), r.text)
        kinds.add(case.kind)
    assert len(kinds) >= 20  # the seed reaches most mutations, not one kind 120 times


def test_artifacts_that_disagree_stop_the_app_naming_the_field(tmp_path, tiny_source, encoder):
    from r4t.serve.artifacts import resolve_artifacts

    run_dir = tiny_artifacts(tmp_path, tiny_source, encoder, catalog_hash="another catalog")
    with pytest.raises(ManifestMismatch, match="field 'catalog_hash'"):
        resolve_artifacts(run_dir, "tiny")
    manifest = read_json(run_dir / "tiny" / "diffusion" / "model" / "manifest.json")
    assert manifest["catalog_hash"] == "another catalog"


@pytest.mark.parametrize("method", ["R4T-Diffusion", "no fan-out"])
def test_the_served_path_returns_what_r4t_retrieve_returns(served, tiny_source, encoder, method):
    """One retrieval core, two hosts: for the same query, seed and artifacts, the HTTP API and r4t.retrieve give the
    same items with the same scores."""
    from r4t.config import EvalConfig, SamplerConfig
    from r4t.retrieve import Retriever

    cfg = EvalConfig(run_dir=str(served.run_dir), seed=7, datasets=[DatasetSpec("tiny", "r4t", str(tiny_source))],
                     sampler=SamplerConfig(steps=4))  # the served app's sampler
    retriever = Retriever.from_config(cfg, "tiny", method, encoder=encoder)
    for query in ("winter look", "beach vacation outfit", "red boots"):
        expected = retriever.retrieve(query, k=5)[0]
        body = served.post("/v1/fanout", json={"query": query, "k": 5, "method": method, "seed": 7}).json()
        assert [i["id"] for i in body["items"]] == expected.item_ids
        assert [i["score"] for i in body["items"]] == pytest.approx(expected.scores, abs=1e-5)


@pytest.mark.parametrize("args, named", [({"dataset": "tiny", "samplr": {"steps": 2}}, "samplr"),
                                         ({"dataset": "tiny", "threads": "four"}, "threads"),
                                         ({"dataset": "tiny", "denoiser_replicas": 0}, "denoiser_replicas")])
def test_serve_config_args_that_are_unknown_or_mistyped_stop_the_app_naming_the_key(args, named):
    """A typo in a Serve config's `args` is an error before any replica starts, not a silently ignored key."""
    from r4t.serve.app import build_app

    with pytest.raises(ConfigError, match=f"Serve application args: {named}"):
        build_app(args)


def _denoiser_replicas() -> set[str]:
    import ray

    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "Denoiser" in a["name"]}


def test_a_replica_failing_its_health_check_is_replaced(served):
    import os
    import time

    before = _denoiser_replicas()
    assert len(before) == 1
    weights = served.run_dir / "tiny" / "diffusion" / "model" / "model.safetensors"
    st = os.stat(weights)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # "changed on disk under the replica"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (_denoiser_replicas() & before or not _denoiser_replicas()):
        time.sleep(1)
    after = _denoiser_replicas()
    assert after and not after & before  # the unhealthy replica was taken out and a new one started
    r = served.post("/v1/fanout", json={"query": "beach vacation outfit", "k": 3})
    assert r.status_code == 200 and len(r.json()["items"]) == 3


def test_the_api_key_can_come_from_the_environment_and_never_silently_goes_missing(monkeypatch):
    from r4t.serve.app import resolve_api_key

    monkeypatch.setenv("R4T_TEST_KEY", "s3cret")
    assert resolve_api_key(None, "R4T_TEST_KEY") == "s3cret"
    assert resolve_api_key("literal", None) == "literal" and resolve_api_key(None, None) is None
    monkeypatch.delenv("R4T_TEST_KEY")
    with pytest.raises(RuntimeError, match="R4T_TEST_KEY"):
        resolve_api_key(None, "R4T_TEST_KEY")  # an unset secret stops the replica instead of serving openly
    with pytest.raises(ValueError, match="not both"):
        resolve_api_key("a", "R4T_TEST_KEY")
