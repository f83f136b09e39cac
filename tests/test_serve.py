"""The serving app over real HTTP on 127.0.0.1: a grounded set comes back; bad requests are 4xx, never 5xx; both
layouts agree; a catalog swaps in under load; the page at / works in a real browser."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import torch
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from r4t.config import DatasetSpec, IndexConfig
from r4t.diffusion.checkpoint import export_model
from r4t.diffusion.denoiser import DenoiserConfig, EDMDenoiser
from r4t.errors import ConfigError, ManifestMismatch
from r4t.index import MANIFEST_FILE
from r4t.io import read_json, sha256_file
from r4t.serve.messages import METHODS


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
        run_app(tiny_app_args(run_dir, **args))
        with httpx.Client(base_url=base_url, timeout=60) as client:
            client.run_dir = run_dir
            yield client


def tiny_app_args(run_dir: Path, **args) -> dict:
    """The app's args over the tiny artifacts: a sampler of 4 steps, health checked every second."""
    return {"run_dir": str(run_dir), "dataset": "tiny", "sampler": {"steps": 4}, "health_check_period_s": 1, **args}


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
    with pytest.raises(ManifestMismatch, match="field 'catalog_hash'.*allow_catalog_change"):
        resolve_artifacts(run_dir, "tiny")
    manifest = read_json(run_dir / "tiny" / "diffusion" / "model" / "manifest.json")
    assert manifest["catalog_hash"] == "another catalog"
    assert resolve_artifacts(run_dir, "tiny", allow_catalog_change=True).root == run_dir.resolve() / "tiny"


def grown_catalog(folder: Path, source: Path, encoder, extra: list[tuple[str, str]]) -> Path:
    """The tiny catalog with `extra` (text, category) items added, prepared (data and index) with the same encoder:
    what a catalog looks like the day after the denoiser was trained. → the catalog's folder."""
    import pyarrow as pa

    from r4t.catalog import prepare_catalog
    from r4t.data.dataset import Dataset

    ds = Dataset.load(source)
    new = [{"item_id": f"new{n}", "text": t, "category": c} for n, (t, c) in enumerate(extra)]
    items = pa.concat_tables([ds.items, pa.Table.from_pylist(new, schema=ds.items.schema)])
    grown = Dataset(ds.name, items, ds.sets, ds.queries).save(folder / "source")
    prepare_catalog(DatasetSpec("tiny", "r4t", str(grown)), folder, encoder, IndexConfig(), progress=False)
    return folder / "tiny"


def test_a_catalog_by_another_encoder_is_refused_even_when_catalog_changes_are_allowed(tmp_path, tiny_source, encoder):
    import shutil

    from r4t.io import write_json
    from r4t.serve.artifacts import resolve_artifacts

    run_dir = tiny_artifacts(tmp_path / "run", tiny_source, encoder)
    catalog = grown_catalog(tmp_path / "new", tiny_source, encoder, [("green rain jacket", "outerwear")])
    assert resolve_artifacts(run_dir, "tiny", catalog=str(catalog), allow_catalog_change=True).root == catalog
    other = tmp_path / "other" / "tiny"
    shutil.copytree(catalog, other)
    index = read_json(other / "index" / MANIFEST_FILE)
    write_json(other / "index" / MANIFEST_FILE, {**index, "weights_hash": "f" * 64})  # another encoder's vectors
    with pytest.raises(ManifestMismatch, match="field 'encoder_hash'"):
        resolve_artifacts(run_dir, "tiny", catalog=str(other), allow_catalog_change=True)


def test_composed_and_fused_layouts_return_identical_sets(served):
    """The hops carry no work: the fused layout (every stage in the ingress) answers each seeded request with the
    items, scores and metrics the composed one (a deployment per stage) does."""
    from ray import serve

    from r4t.serve.local import run_app

    run_app({"run_dir": str(served.run_dir), "dataset": "tiny", "sampler": {"steps": 4}, "layout": "fused"},
            name="r4t-fused", route_prefix="/fused")
    try:
        for query in ("winter look", "beach vacation outfit", "red boots"):
            for method in METHODS:
                body = {"query": query, "k": 5, "method": method, "seed": 11}
                composed = served.post("/v1/fanout", json=body).json()
                fused = served.post("/fused/v1/fanout", json=body).json()
                assert [i["id"] for i in fused["items"]] == [i["id"] for i in composed["items"]]
                assert [i["score"] for i in fused["items"]] == pytest.approx([i["score"] for i in composed["items"]],
                                                                             abs=1e-6)
                assert fused["metrics"] == pytest.approx(composed["metrics"], abs=1e-6)
        batch = served.post("/fused/v1/fanout/batch", json={"requests": [{"query": "a"}, {"query": "b", "k": 2}]})
        assert batch.status_code == 200 and [len(s["items"]) for s in batch.json()] == [10, 2]
    finally:
        serve.delete("r4t-fused")


def test_a_new_catalog_is_swapped_in_under_load_without_a_failed_request(served, tmp_path, tiny_source, encoder):
    """Items added after training: a new index built with the same encoder replaces the served one (a new version
    of the app's deployments, rolled out by Serve) while clients keep sending; none of their requests fails and,
    once rolled out, every answer comes from the new catalog. (An app of its own beside the module's.)"""
    import threading

    from ray import serve

    from r4t.serve.local import run_app

    run_dir = tiny_artifacts(tmp_path / "run", tiny_source, encoder)
    catalog = grown_catalog(tmp_path / "new", tiny_source, encoder,
                            [("green rain jacket", "outerwear"), ("yellow rain boots", "shoes"),
                             ("waterproof umbrella tote", "bags")])
    new_hash = read_json(catalog / "index" / MANIFEST_FILE)["catalog_hash"][:12]
    args = tiny_app_args(run_dir, layout="fused")  # two deployments to roll out, not four: the same mechanism
    app = {"name": "r4t-swap", "route_prefix": "/swap"}
    with pytest.raises(ManifestMismatch, match="allow_catalog_change"):
        run_app({**args, "catalog": str(catalog)}, **app)
    run_app(args, **app)
    sent, statuses, answers, stop = [], [], [], threading.Event()

    def clients() -> None:
        with httpx.Client(base_url=served.base_url, timeout=60) as c:
            while not stop.is_set() and len(statuses) < 5000:  # bounded in count as well as in time
                sent.append(time.monotonic())
                r = c.post("/swap/v1/fanout", json={"query": "rainy day outfit", "k": 5})
                statuses.append(r.status_code)
                answers.append(r.json())

    sender = threading.Thread(target=clients)
    sender.start()
    try:
        while len(statuses) < 5 and sender.is_alive():
            time.sleep(0.1)
        run_app({**args, "catalog": str(catalog), "allow_catalog_change": True}, **app)  # returns once rolled out
        swapped = time.monotonic()
        while time.monotonic() < swapped + 30 and sum(t > swapped for t in sent) < 20:
            time.sleep(0.1)
    finally:
        stop.set()
        sender.join(timeout=60)
        serve.delete(app["name"])
    before_swap = sum(t < swapped for t in sent)
    assert before_swap >= 5 and len(statuses) >= before_swap + 20  # load before, during and after the swap
    assert all(s == 200 for s in statuses), {s: statuses.count(s) for s in set(statuses)}
    later = [a for t, a in zip(sent, answers) if t > swapped]
    assert {a["versions"]["catalog"] for a in later} == {new_hash}
    new_ids = {f"i{n}" for n in range(40)} | {"new0", "new1", "new2"}
    assert all(i["id"] in new_ids for a in later for i in a["items"])
    assert answers[0]["versions"]["catalog"] != new_hash


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


# The page at / in a real headless Chromium (Debian's, driven by selenium): the sets it shows are the API's.

PAGE_K = 5
PAGE_WAIT_S = 60


def headless_chromium():
    """Debian's chromium and chromedriver, both named explicitly so selenium never downloads either."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        pytest.fail("the page test needs Debian's chromium and chromedriver: run `apt-get install chromium "
                    "chromium-driver` as root (scripts/bootstrap.sh does, when run as root)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1200,900"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


@pytest.fixture(scope="module")
def browser():
    chromium = headless_chromium()
    try:
        yield chromium
    finally:
        chromium.quit()


def search(browser, served, query: str, submit_with_enter: bool) -> dict:
    """Open /, search for `query` with PAGE_K items and every method checked → method → its settled column."""
    browser.get(str(served.base_url))
    wait = WebDriverWait(browser, PAGE_WAIT_S)
    choices = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#methods .method-choice"))
    methods = served.get("/v1/info").json()["methods"]
    assert [c.get_attribute("value") for c in choices] == methods and all(c.is_selected() for c in choices)
    box, k = browser.find_element(By.ID, "query"), browser.find_element(By.ID, "k")
    assert k.get_attribute("value") == "10"
    k.clear()
    k.send_keys(str(PAGE_K))
    box.clear()
    box.send_keys(query)
    if submit_with_enter:
        box.send_keys(Keys.ENTER)
    else:
        browser.find_element(By.ID, "go").click()

    def settled(b):
        columns = b.find_elements(By.CSS_SELECTOR, ".method-column")
        states = [c.get_attribute("data-state") for c in columns]
        return len(columns) == len(methods) and "loading" not in states and columns

    return {c.get_attribute("data-method"): c for c in wait.until(settled)}


def shown_items(column) -> list[tuple[str, str, str]]:
    return [tuple(row.find_element(By.CSS_SELECTOR, f".{part}").text for part in ("text", "category", "score"))
            for row in column.find_elements(By.CSS_SELECTOR, ".item")]


def test_the_page_shows_each_methods_set_side_by_side(browser, served, tiny_catalog):
    query = "beach vacation outfit"
    columns = search(browser, served, query, submit_with_enter=True)
    for method in ("no fan-out", "R4T-Diffusion"):
        assert columns[method].get_attribute("data-state") == "done", columns[method].text
        metrics = columns[method].find_element(By.CSS_SELECTOR, ".metrics").text
        assert re.fullmatch(r"Vendi \d+\.\d\d · align -?\d\.\d{3} · \d+ ms", metrics), metrics
        shown = shown_items(columns[method])
        assert len(shown) == PAGE_K and all(re.fullmatch(r"-?\d\.\d{3}", score) for _, _, score in shown)

    # no fan-out is deterministic: the page shows exactly what the API returns
    api = served.post("/v1/fanout", json={"query": query, "k": PAGE_K, "method": "no fan-out"}).json()["items"]
    shown = shown_items(columns["no fan-out"])
    assert [(t, c) for t, c, _ in shown] == [(i["text"], i["category"]) for i in api]
    assert [float(s) for _, _, s in shown] == pytest.approx([i["score"] for i in api], abs=5.01e-4)
    # R4T-Diffusion samples fresh noise per request: PAGE_K distinct catalog items under their own categories
    category_of = dict(zip(tiny_catalog.texts, tiny_catalog.categories))
    shown = shown_items(columns["R4T-Diffusion"])
    assert len({t for t, _, _ in shown}) == PAGE_K and all(category_of.get(t) == c for t, c, _ in shown), shown


def test_a_blank_query_shows_the_apis_error_in_every_column(browser, served):
    columns = search(browser, served, "   ", submit_with_enter=False)
    for method, column in columns.items():
        expected = served.post("/v1/fanout", json={"query": "   ", "k": PAGE_K, "method": method}).json()["error"]
        assert column.get_attribute("data-state") == "error" and "blank" in expected
        assert column.find_element(By.CSS_SELECTOR, ".error").text == expected
        assert column.find_elements(By.CSS_SELECTOR, ".item") == []
