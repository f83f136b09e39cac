"""The `r4t` command, run in-process on a tiny r4t-format dataset that the tests write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_RL_OVERRIDES
from r4t.cli import main
from r4t.data.dataset import INFO_FILE, ITEMS_FILE, QUERIES_FILE, SETS_FILE, Dataset
from r4t.embed import EMBEDDINGS_FILE, EMBEDDINGS_MANIFEST
from r4t.eval.baselines import METHODS
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


def test_demo(ray_local, tmp_path: Path, tiny_source: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    argv = ["demo", "--config", DEMO_YAML, *overrides(tmp_path, tiny_source, "eval.k=4", *TINY_RL_OVERRIDES)]
    capsys.readouterr()
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "| tiny | warm start |" in stdout and "| tiny | RL (rl) |" in stdout  # the RL stage's table
    table_lines = [line for line in stdout.splitlines() if line.startswith("| tiny |") and "RL" not in line
                   and "warm start" not in line]
    assert len(table_lines) == len(METHODS) == 2
    for method, line in zip(METHODS, table_lines):
        assert line.startswith(f"| tiny | {method} |")
        assert line.count("|") == 10
    assert "Recall@5K" in stdout and "composite" in stdout
    results = read_json(tmp_path / "baselines.json")
    assert results["config"]["run_dir"] == str(tmp_path)
    res = results["results"]["tiny"]
    assert res["queries"] == {"oar": 3, "wscr": 2} and res["k"] == 4 and res["split"] == "test"
    assert set(res["methods"]) == set(METHODS)
    for metrics in res["methods"].values():
        assert 0.0 <= metrics["Recall@5K"]["mean"] <= 1.0
        assert metrics["cat. share"]["lo"] <= metrics["cat. share"]["mean"] <= metrics["cat. share"]["hi"]
    # the diverse heuristic takes one item per category (5 categories, K=4): every item differs in category
    assert res["methods"]["category-diverse"]["cat. share"]["mean"] == pytest.approx(1.0)
    md = (tmp_path / "baselines.md").read_text()
    assert md.startswith("# Baselines (test split, K=4)")
    assert all(line in md for line in table_lines)
    assert (tmp_path / "tiny" / "index" / MANIFEST_FILE).is_file()

    # A second run reuses data, embeddings and index.
    monkeypatch.setattr(ItemIndex, "build", classmethod(lambda *a, **k: pytest.fail("index rebuilt on rerun")))
    assert main(argv) == 0
    assert read_json(tmp_path / "baselines.json")["results"] == results["results"]


def test_demo_catalog_smaller_than_wscr_depth(ray_local, tmp_path: Path, tiny_source: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    """Default eval.k=10 with wscr_m=5 asks the WSCR baselines for 50 items of a 40-item catalog: the demo must
    clip (as the no-fan-out baseline does) or fail with a clear input error, never crash."""
    capsys.readouterr()
    rc = main(["demo", "--config", DEMO_YAML, *overrides(tmp_path, tiny_source, *TINY_RL_OVERRIDES)])
    err = capsys.readouterr().err
    assert rc == 0 or (rc == 2 and "r4t: error:" in err)


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
