"""The `r4t` command, run in-process on a tiny r4t-format dataset that the tests write."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_DEMO
from r4t.cli import main
from r4t.data.dataset import INFO_FILE, ITEMS_FILE, QUERIES_FILE, SETS_FILE, Dataset
from r4t.embed import EMBEDDINGS_FILE, EMBEDDINGS_MANIFEST
from r4t.config import PipelineConfig, load_config
from r4t.index import MANIFEST_FILE, ItemIndex
from r4t.io import read_json

REPO = Path(__file__).resolve().parents[1]
DATA_YAML = str(REPO / "jobs" / "data.yaml")
DEMO_YAML = str(REPO / "jobs" / "demo.yaml")


# ------------------------------------------------------------------------------------------------ fixtures


def overrides(run_dir: Path, source: Path, *extra: str) -> list[str]:
    return [f"run_dir={run_dir}", f"datasets=[{{name: tiny, format: r4t, path: '{source}'}}]", *extra]


@pytest.fixture(scope="module")
def prepared_run(tmp_path_factory: pytest.TempPathFactory, tiny_source: Path) -> Path:
    """A run_dir in which `r4t index build` has finished for the tiny dataset."""
    run_dir = tmp_path_factory.mktemp("run")
    assert main(["index", "build", "--config", DATA_YAML, *overrides(run_dir, tiny_source)]) == 0
    return run_dir


def score_argv(fanouts: Path, run_dir: Path, source: Path, *options: str) -> list[str]:
    """`r4t score` with the overrides right after the positional argument (see test_overrides_after_options)."""
    return ["score", str(fanouts), *overrides(run_dir, source, "reward.k=3"), "--dataset", "tiny", "--config",
            DATA_YAML, *options]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def error_of(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err  # may start with progress bars (model loading, encoding)
    assert "Traceback" not in err
    assert "r4t: error: " in err
    return err[err.index("r4t: error: "):]


# ------------------------------------------------------------------------------------------------ data build


def test_data_build_r4t(tmp_path: Path, tiny_source: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    rc = main(["data", "build", "tiny", f"run_dir={run_dir}", "--format", "r4t", "--path", str(tiny_source),
               "--config", DATA_YAML])
    assert rc == 0
    out = run_dir / "tiny" / "data"
    assert {p.name for p in out.iterdir()} == {ITEMS_FILE, SETS_FILE, QUERIES_FILE, INFO_FILE}
    ds, src = Dataset.load(out), Dataset.load(tiny_source)
    assert ds.items.equals(src.items) and ds.sets.equals(src.sets) and ds.queries.equals(src.queries)
    assert read_json(out / INFO_FILE)["name"] == "tiny"
    stdout = capsys.readouterr().out
    assert "tiny: 40 items, 5 reference sets, 9 queries" in stdout


def test_data_build_builtin(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "build", "polyvore", f"run_dir={tmp_path}", "--config", DATA_YAML]) == 0
    info = read_json(tmp_path / "polyvore" / "data" / INFO_FILE)
    assert info["items"] == 8923 and info["name"] == "polyvore"
    assert "polyvore: 8923 items" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ index build


def test_index_build(prepared_run: Path, tiny_catalog) -> None:
    index_dir = prepared_run / "tiny" / "index"
    manifest = read_json(index_dir / MANIFEST_FILE)
    assert manifest["count"] == 40 and manifest["dim"] == 384 and manifest["factory"] == "Flat"
    assert manifest["shards"] == 1 and manifest["encoder"] == "minilm"
    assert manifest["catalog_hash"] == Dataset.load(prepared_run / "tiny" / "data").catalog_hash
    assert (index_dir / EMBEDDINGS_FILE).is_file() and (index_dir / EMBEDDINGS_MANIFEST).is_file()
    index = ItemIndex.load(index_dir)
    assert index.item_ids == [f"i{r}" for r in range(40)]
    # The stored embeddings are the encoder's: an item's own text finds it first.
    _, rows = index.search(tiny_catalog.emb[:5], 1)
    np.testing.assert_array_equal(rows[:, 0], np.arange(5))


def test_index_build_sharded_ivf(tmp_path: Path, tiny_source: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["index", "build", "--config", DATA_YAML,
                 *overrides(tmp_path, tiny_source, "index.shards=2", "index.factory=IVF2,Flat")]) == 0
    manifest = read_json(tmp_path / "tiny" / "index" / MANIFEST_FILE)
    assert manifest["shards"] == 2 and manifest["factory"] == "IVF2,Flat"
    assert "2 shard(s)" in capsys.readouterr().out


def test_rerun_reuses_index(tmp_path: Path, tiny_source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["index", "build", "--config", DATA_YAML, *overrides(tmp_path, tiny_source)]
    assert main(argv) == 0
    index_dir = tmp_path / "tiny" / "index"
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "tiny").rglob("*") if p.is_file()}

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the index was rebuilt although a matching one exists")

    monkeypatch.setattr(ItemIndex, "build", classmethod(no_rebuild))
    assert main(argv) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "tiny").rglob("*") if p.is_file()} == stamps
    # A config that changes the index identity does rebuild.
    monkeypatch.undo()
    assert main([*argv, "index.factory=HNSW8"]) == 0
    assert read_json(index_dir / MANIFEST_FILE)["factory"] == "HNSW8"


def test_damaged_index_is_rebuilt(tmp_path: Path, tiny_source: Path) -> None:
    argv = ["index", "build", "--config", DATA_YAML, *overrides(tmp_path, tiny_source)]
    assert main(argv) == 0
    shard = tmp_path / "tiny" / "index" / "shard-000.faiss"
    shard.write_bytes(shard.read_bytes()[:100])
    assert main(argv) == 0
    ItemIndex.load(tmp_path / "tiny" / "index")  # verifies every file against the manifest


# ------------------------------------------------------------------------------------------------ score


def test_score(prepared_run: Path, tiny_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fanouts = write_jsonl(tmp_path / "fanouts.jsonl", [
        {"query": "beach day", "subqueries": ["straw sun hat", "canvas beach tote", "espadrille wedges"]},
        {"query": "evening out", "completion": "just one line"},
        "",  # blank lines are skipped
        {"query": "beach day", "completion": "1. straw sun hat\n2. canvas beach tote\n3. white lace sundress",
         "reference": ["i0", "i8", "i16", "i24"]},
    ])
    out = tmp_path / "scores.jsonl"
    capsys.readouterr()
    rc = main(score_argv(fanouts, prepared_run, tiny_source, "--out", str(out)))
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3
    valid, bad, wscr = rows
    assert valid["query"] == "beach day" and valid["malformed"] is False and valid["error"] == ""
    for key in ("reward", "composite", "ground", "div", "div_raw", "align"):
        assert isinstance(valid[key], float) and np.isfinite(valid[key]), key
    assert valid["reward"] == pytest.approx(valid["composite"])
    assert valid["recall"] is None and valid["hit"] is None  # no reference set: not applicable
    assert -1.0 <= valid["ground"] <= 1.0 and -1.0 <= valid["align"] <= 1.0
    assert bad["malformed"] is True and bad["reward"] == -1.0 and "3" in bad["error"]
    assert bad["ground"] is None and bad["align"] is None
    assert wscr["malformed"] is False and 0.0 <= wscr["recall"] <= 1.0 and wscr["reward"] == wscr["recall"]
    assert wscr["hit"] in (0.0, 1.0)
    assert "scored 3 fan-outs (1 malformed)" in capsys.readouterr().err


def test_score_to_stdout(prepared_run: Path, tiny_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fanouts = write_jsonl(tmp_path / "f.jsonl", [{"query": "q", "subqueries": ["a hat", "a ring", "a bag"]}])
    capsys.readouterr()
    assert main(score_argv(fanouts, prepared_run, tiny_source)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["malformed"] is False


# ------------------------------------------------------------------------------------------------ demo




def test_demo_runs_every_stage_and_a_rerun_resumes(ray_local, tmp_path: Path, tiny_rl_source: Path,
                                                    capsys: pytest.CaptureFixture, monkeypatch) -> None:
    argv = ["demo", "--config", DEMO_YAML, *overrides(tmp_path, tiny_rl_source, *TINY_DEMO)]
    capsys.readouterr()
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    final = stdout[stdout.index("Held-out results"):]
    asked = load_config(PipelineConfig, DEMO_YAML).methods.names  # the demo file's methods
    names = [n if n != "best-of-N LM" else "best-of-2 LM" for n in asked]
    generating = {"zero-shot LM", "best-of-2 LM", "R4T-FOLM", "R4T-Diffusion"}
    for name in names:  # every method in the judge's, the reward's and the latency table; and in the fan-out
        assert final.count(f"| tiny | {name} |") == 3 + (name in generating)  # table if it generates
    assert (final.index("The judge's view") < final.index("The reward's view") < final.index("Latency of retrieval")
            < final.index("Latency of the fan-out alone"))
    report = tmp_path / "report"
    assert f"report: {report / 'report.md'}" in stdout
    metrics = read_json(report / "metrics.json")["results"]["tiny"]
    assert set(metrics["methods"]) == set(names) and metrics["queries"] == {"oar": 8}
    for name, res in metrics["methods"].items():  # R4T-FOLM and R4T-Diffusion also at the pair batch
        c = res["oar"]["composite"]
        assert 0 <= c["lo"] <= c["mean"] <= c["hi"] <= 1
        assert set(res["latency_s"]) == ({"1", "2", "3"} if name in ("R4T-FOLM", "R4T-Diffusion") else {"1", "2"})
    for name in generating & set(names):
        fan_out, total = metrics["methods"][name]["fanout_s"], metrics["methods"][name]["latency_s"]
        assert set(fan_out) == set(total) and all(0 < fan_out[b] <= total[b] for b in fan_out)
    # the data stage's baselines: category-diverse takes one item per category (5 categories, K=3)
    baselines = read_json(tmp_path / "baselines.json")["results"]["tiny"]["methods"]
    assert baselines["category-diverse"]["oar"]["category_share"]["mean"] == pytest.approx(1.0)
    for stage in ("rl/checkpoints", "synth/manifest.json", "diffusion/model/manifest.json"):
        assert (tmp_path / "tiny" / stage).exists()

    # A rerun finds every stage finished: nothing is rebuilt, trained or synthesized again; eval reruns.
    from r4t.diffusion import train as diffusion_train
    from r4t.jobs import rl as rl_job
    from r4t.jobs import synth as synth_job

    def fail(what: str):
        return lambda *a, **k: pytest.fail(f"{what} on a rerun")

    monkeypatch.setattr(ItemIndex, "build", classmethod(fail("index rebuilt")))
    monkeypatch.setattr(rl_job, "bootstrap_policy", fail("policy bootstrapped"))
    monkeypatch.setattr(rl_job.RLTrainer, "_rollouts_and_scores", fail("RL step taken"))
    monkeypatch.setattr(synth_job, "run_shards", lambda todo, *a, **k: todo and pytest.fail("synthesized") or {})
    monkeypatch.setattr(diffusion_train, "fit_denoiser", fail("denoiser trained"))
    monkeypatch.setattr("r4t.jobs.diffusion.fit_denoiser", fail("denoiser trained"))
    assert main(argv) == 0
    assert read_json(report / "metrics.json")["results"]["tiny"]["queries"] == {"oar": 8}


def test_demo_on_one_dataset_by_flag(tmp_path: Path, tiny_rl_source: Path, capsys) -> None:
    err = error_of(capsys, ["demo", "--dataset", "nope", "--config", DEMO_YAML,
                            *overrides(tmp_path, tiny_rl_source, *TINY_DEMO)])
    assert "--dataset 'nope'" in err and "tiny" in err
    assert not (tmp_path / "tiny").exists()


def test_baselines_on_a_catalog_smaller_than_the_wscr_depth(tmp_path: Path, tiny_source: Path, capsys) -> None:
    """K=10 with wscr_m=5 asks the WSCR baselines for 50 items of a 40-item catalog: clipped, never a crash."""
    from r4t.jobs import data

    capsys.readouterr()
    assert data.main(["--config", DATA_YAML, *overrides(tmp_path, tiny_source)]) == 0
    methods = read_json(tmp_path / "baselines.json")["results"]["tiny"]["methods"]
    assert set(methods) == {"no fan-out", "category-diverse"}
    assert all(0 <= m["wscr"]["recall"]["mean"] <= 1 for m in methods.values())


# ------------------------------------------------------------------------------------------------ retrieve


def test_retrieve_prints_each_querys_set(prepared_run: Path, tiny_source: Path, tiny_catalog, capsys) -> None:
    argv = ["retrieve", "an outfit for a summer wedding", "what to wear on a hike", "--dataset", "tiny",
            "--method", "category-diverse", "--k", "4", "--json", *overrides(prepared_run, tiny_source)]
    capsys.readouterr()
    assert main(argv) == 0
    sets = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [s["query"] for s in sets] == ["an outfit for a summer wedding", "what to wear on a hike"]
    text_of = dict(zip([f"i{r}" for r in range(len(tiny_catalog.texts))], tiny_catalog.texts))
    for s in sets:
        assert s["method"] == "category-diverse" and len(s["items"]) == 4
        assert len({i["category"] for i in s["items"]}) == 4  # one per category
        assert all(text_of[i["id"]] == i["text"] and -1 <= i["score"] <= 1 for i in s["items"])
    assert main(argv[:-7] + ["--method", "MMR", *overrides(prepared_run, tiny_source)]) == 0
    out = capsys.readouterr().out
    assert "an outfit for a summer wedding  (MMR, 10 items)" in out and out.count("  [") == 20


def test_retrieve_python_api(prepared_run: Path, tiny_source: Path) -> None:
    from r4t.config import EvalConfig, load_config
    from r4t.errors import DataError
    from r4t.retrieve import Retriever

    cfg = load_config(EvalConfig, REPO / "jobs" / "eval.yaml", overrides(prepared_run, tiny_source))
    retriever = Retriever.from_config(cfg, "tiny", "no fan-out")
    [one] = retriever.retrieve("red leather boots", k=5)
    assert len(one.item_ids) == 5 and one.scores == sorted(one.scores, reverse=True)
    assert one.generated.shape == (1, 384) and one.subqueries is None
    assert set(one.to_dict(embeddings=True)) == {"query", "method", "items", "generated"}
    with pytest.raises(DataError, match="non-empty strings"):
        retriever.retrieve(["boots", "  "])
    with pytest.raises(DataError, match="k=41"):
        retriever.retrieve("boots", k=41)
    with pytest.raises(DataError, match="'nope' is not in the config's datasets"):
        Retriever.from_config(cfg, "nope", "no fan-out")


@pytest.mark.parametrize("method, stage", [("R4T-Diffusion", "r4t.jobs.diffusion"), ("R4T-FOLM", "r4t.jobs.rl"),
                                           ("zero-shot LM", "r4t.jobs.rl"), ("RLlib policy", "r4t.jobs.rllib"),
                                           ("R4T-Diffusion@diffusion_rllib", "r4t.jobs.diffusion")])
def test_retrieve_names_the_stage_a_method_needs(prepared_run: Path, tiny_source: Path, capsys, method,
                                                 stage) -> None:
    err = error_of(capsys, ["retrieve", "boots", "--dataset", "tiny", "--method", method,
                            *overrides(prepared_run, tiny_source)])
    assert method in err and f"python -m {stage}" in err


def test_retrieve_unknown_method(prepared_run: Path, tiny_source: Path, capsys) -> None:
    err = error_of(capsys, ["retrieve", "boots", "--dataset", "tiny", "--method", "magic",
                            *overrides(prepared_run, tiny_source)])
    assert "'magic'" in err and "R4T-Diffusion" in err


# ------------------------------------------------------------------------------------------------ bad input


def test_missing_fanouts_file(prepared_run: Path, tiny_source: Path, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.jsonl"
    err = error_of(capsys, score_argv(missing, prepared_run, tiny_source))
    assert str(missing) in err and "not found" in err


def test_invalid_json_line(prepared_run: Path, tiny_source: Path, tmp_path: Path, capsys) -> None:
    fanouts = write_jsonl(tmp_path / "f.jsonl", [{"query": "q", "subqueries": ["a", "b", "c"]}, "{not json",
                                                 {"query": "q2", "subqueries": ["a", "b", "c"]}])
    err = error_of(capsys, score_argv(fanouts, prepared_run, tiny_source))
    assert f"{fanouts}:2" in err and "JSON" in err


@pytest.mark.parametrize("row, needs", [({"completion": "a\nb\nc"}, "query"), ({"query": "q"}, "completion"),
                                        ([1, 2], "query")])
def test_fanout_missing_fields(prepared_run: Path, tiny_source: Path, tmp_path: Path, capsys, row, needs) -> None:
    fanouts = write_jsonl(tmp_path / "f.jsonl", [row])
    err = error_of(capsys, score_argv(fanouts, prepared_run, tiny_source))
    assert f"{fanouts}:1" in err and needs in err


def test_empty_fanouts_file(prepared_run: Path, tiny_source: Path, tmp_path: Path, capsys) -> None:
    fanouts = tmp_path / "empty.jsonl"
    fanouts.write_text("\n\n")
    err = error_of(capsys, score_argv(fanouts, prepared_run, tiny_source))
    assert str(fanouts) in err and "no fan-outs" in err


def test_score_unknown_dataset(prepared_run: Path, tiny_source: Path, tmp_path: Path, capsys) -> None:
    fanouts = write_jsonl(tmp_path / "f.jsonl", [{"query": "q", "subqueries": ["a", "b", "c"]}])
    err = error_of(capsys, score_argv(fanouts, prepared_run, tiny_source, "--dataset", "nope"))
    assert "'nope'" in err and "tiny" in err


def test_data_build_unknown_builtin(tmp_path: Path, capsys) -> None:
    err = error_of(capsys, ["data", "build", "nope", f"run_dir={tmp_path}", "--config", DATA_YAML])
    assert "'nope'" in err and "polyvore" in err
    assert not (tmp_path / "nope").exists()


def test_data_build_missing_path(tmp_path: Path, capsys) -> None:
    err = error_of(capsys, ["data", "build", "x", f"run_dir={tmp_path / 'run'}", "--format", "r4t", "--path",
                            str(tmp_path / "absent"), "--config", DATA_YAML])
    assert str(tmp_path / "absent") in err


def test_unknown_config_key(tmp_path: Path, tiny_source: Path, capsys) -> None:
    argv = ["index", "build", "--config", DATA_YAML, *overrides(tmp_path, tiny_source, "index.bogus=1")]
    err = error_of(capsys, argv)
    assert "index.bogus" in err
    assert not (tmp_path / "tiny").exists()  # nothing ran


def test_unknown_key_in_config_file(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "job.yaml"
    cfg.write_text("index:\n  factroy: Flat\n")
    err = error_of(capsys, ["demo", "--config", str(cfg), f"run_dir={tmp_path}"])
    assert str(cfg) in err and "factroy" in err


def test_bad_config_value(tmp_path: Path, capsys) -> None:
    err = error_of(capsys, ["data", "build", "polyvore", "index.nprobe=abc", "--config", DATA_YAML])
    assert "index.nprobe" in err and "abc" in err


def test_missing_config_file(tmp_path: Path, capsys) -> None:
    err = error_of(capsys, ["index", "build", "--config", str(tmp_path / "none.yaml")])
    assert str(tmp_path / "none.yaml") in err


def test_invalid_factory_from_cli(tmp_path: Path, tiny_source: Path, capsys) -> None:
    err = error_of(capsys, ["index", "build", "--config", DATA_YAML,
                            *overrides(tmp_path, tiny_source, "index.factory=Bogus99")])
    assert "Bogus99" in err and "index.factory" in err


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as e:
        main(["score"])  # the fan-outs file is required
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2


def test_overrides_after_options(prepared_run: Path, tiny_source: Path, tmp_path: Path, capsys) -> None:
    """`r4t score FILE --dataset X key=value` and `r4t data build NAME --config F key=value`: the dotted overrides
    are accepted after the options too, as for `r4t demo` and `r4t index build`."""
    fanouts = write_jsonl(tmp_path / "f.jsonl", [{"query": "q", "subqueries": ["a hat", "a ring", "a bag"]}])
    out = tmp_path / "scores.jsonl"
    assert main(["score", str(fanouts), "--dataset", "tiny", "--out", str(out), "--config", DATA_YAML,
                 *overrides(prepared_run, tiny_source, "reward.k=3")]) == 0
    assert json.loads(out.read_text())["malformed"] is False
    assert main(["data", "build", "tiny", "--format", "r4t", "--path", str(tiny_source), "--config", DATA_YAML,
                 f"run_dir={tmp_path / 'run'}"]) == 0
    assert (tmp_path / "run" / "tiny" / "data" / INFO_FILE).is_file()


def test_submit_builds_the_ray_job_submit_command(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.chdir(REPO)
    for var in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no token of this machine's clusters
    capsys.readouterr()
    assert main(["submit", "rl", "--dry-run", "rl.steps=3", "--address", "http://head:8265",
                 "--submission-id", "r4t-rl-x"]) == 0
    argv = shlex.split(capsys.readouterr().out.strip().removeprefix("$ "))
    assert argv[1:] == ["job", "submit", "--address", "http://head:8265", "--runtime-env", "jobs/runtime_env.yaml",
                        "--submission-id", "r4t-rl-x", "--", "python", "-m", "r4t.jobs.rl", "--config",
                        "jobs/rl.yaml", "rl.steps=3"]
    monkeypatch.setenv("RAY_ADDRESS", "http://from-env:8265")
    assert main(["submit", "pipeline", "--stage", "rl", "--stage", "synth", "--no-wait", "--dry-run"]) == 0
    argv = shlex.split(capsys.readouterr().out.strip().removeprefix("$ "))
    assert argv[argv.index("--address") + 1] == "http://from-env:8265" and "--no-wait" in argv
    assert argv[argv.index("--") + 1:] == ["python", "-m", "r4t.jobs.pipeline", "--config", "jobs/pipeline.yaml",
                                           "--stage", "rl", "--stage", "synth"]


def test_submit_sends_the_local_clusters_token(tmp_path) -> None:
    """`ray start --head` keeps its token in ~/.ray/auth_token, which Ray's job client sends only in token mode:
    with a token at hand and no mode chosen, r4t submit chooses token mode; a mode the user chose stays."""
    from r4t.jobs.submit import submit_env

    home = {"HOME": str(tmp_path)}
    assert "RAY_AUTH_MODE" not in submit_env(home)  # no token anywhere: nothing to send
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("secret")
    assert submit_env(home)["RAY_AUTH_MODE"] == "token"
    assert submit_env({**home, "RAY_AUTH_MODE": "disabled"})["RAY_AUTH_MODE"] == "disabled"
    assert submit_env({"HOME": str(tmp_path / "elsewhere"), "RAY_AUTH_TOKEN": "t"})["RAY_AUTH_MODE"] == "token"


@pytest.mark.parametrize("argv, message", [
    (["submit", "rl", "rl.stepz=3"], "key 'rl.stepz'"),  # checked here, before anything reaches the cluster
    (["submit", "synth", "--config", "/nonexistent/x.yaml"], "x.yaml: config file not found"),
    (["submit", "rl", "--stage", "rl"], "only `r4t submit pipeline`"),
    (["submit", "rl", "--runtime-env", "nope.yaml"], "--runtime-env nope.yaml: file not found"),
])
def test_submit_refuses_bad_input_before_submitting(monkeypatch, capsys, argv, message) -> None:
    monkeypatch.chdir(REPO)
    assert message in error_of(capsys, [*argv, "--dry-run"])


def test_submit_refuses_a_config_the_job_would_not_ship(tmp_path, monkeypatch, capsys) -> None:
    outside = tmp_path / "rl.yaml"
    outside.write_text((REPO / "jobs" / "rl.yaml").read_text())
    monkeypatch.chdir(REPO)
    assert "outside the working directory" in error_of(capsys, ["submit", "rl", "--config", str(outside), "--dry-run"])
