"""Target synthesis: rows are what the task says, shards resume exactly, stale folders are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_K, TINY_QUERIES, killing
from r4t.catalog import prepare_catalog
from r4t.config import load_config, SynthConfig
from r4t.errors import ConfigError, DataError, R4TError
from r4t.jobs import synth as job
from r4t.policy.prompt import PLAIN_TEMPLATE
from r4t.synth.synthesize import pending_shards, plan_shards, run_shards
from r4t.synth.targets import query_embeddings, read_manifest, read_targets, target_arrays
from r4t.synth.teacher import resolve_teacher

REPO = Path(__file__).resolve().parents[1]


def synth_config(run_dir: Path, source: Path, teacher: Path, *extra: str) -> SynthConfig:
    """jobs/synth.yaml on the tiny dataset, prompting as the tiny policy was trained: without listed items."""
    return load_config(SynthConfig, REPO / "jobs" / "synth.yaml", [
        'policy.template="' + PLAIN_TEMPLATE.encode('unicode_escape').decode() + '"', "policy.context_items=0",
        f"run_dir={run_dir}", f"datasets=[{{name: tiny, format: r4t, path: '{source}'}}]", f"synth.teacher={teacher}",
        f"reward.k={TINY_K}", "policy.max_new_tokens=48", "synth.samples=4", "synth.rows=3", "synth.splits=[train]",
        "synth.queries_per_shard=3", "synth.prompts_per_call=2", *extra])


def table_rows(out: Path) -> list[dict]:
    """The split's rows in (query, sample) order, NaN as None so that equal rows compare equal."""
    t = read_targets(out, "train").sort_by([("query_id", "ascending"), ("sample", "ascending")])
    return [{k: None if isinstance(v, float) and np.isnan(v) else v for k, v in row.items()} for row in t.to_pylist()]


def test_oar_targets_are_the_grounded_items(ray_local, tmp_path, tiny_rl_source, tiny_policy, tiny_catalog):
    cfg = synth_config(tmp_path, tiny_rl_source, tiny_policy)
    result = job.run(cfg, progress=False)["tiny"]
    out = Path(result["out"])
    manifest = read_manifest(out)
    assert result["shards"] == 3 and manifest["splits"]["train"]["rows"] > 0
    table = read_targets(out, "train")
    x, valid = target_arrays(table)
    q = query_embeddings(table)
    assert x.shape[1:] == (3, tiny_catalog.emb.shape[1]) and valid.all()
    row_of = {i: r for r, i in enumerate(tiny_catalog.ids)}
    for target, items, subs in zip(x, table.column("item_ids").to_pylist(), table.column("subqueries").to_pylist()):
        assert len(set(items)) == 3 and len(subs) == TINY_K  # L distinct items from a well-formed fan-out
        np.testing.assert_allclose(target, tiny_catalog.emb[[row_of[i] for i in items]], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    assert set(table.column("query").to_pylist()) <= set(TINY_QUERIES)
    assert manifest["sigma_data"] == pytest.approx(float(np.sqrt(np.mean(x.astype(np.float64) ** 2))), rel=1e-6)
    assert manifest["last_run"]["rows_per_s"] > 0
    assert all(h == manifest["identity"]["policy_hash"] for h in table.column("policy_hash").to_pylist())
    samples = table.column("sample").to_numpy()
    assert samples.min() >= 0 and samples.max() < 4


def test_interrupted_synthesis_resumes_to_exactly_the_uninterrupted_rows(ray_local, tmp_path, tiny_rl_source,
                                                                         tiny_policy, encoder):
    whole = synth_config(tmp_path / "a", tiny_rl_source, tiny_policy)
    job.run(whole, progress=False)
    expected = table_rows(tmp_path / "a" / "tiny" / "synth")

    # The "killed" run: only the first shard finished, the writer of the second died mid-write (its temporary
    # file is left behind) and no manifest was written.
    cfg = synth_config(tmp_path / "b", tiny_rl_source, tiny_policy)
    spec = cfg.datasets[0]
    cat = prepare_catalog(spec, cfg.run_dir, encoder, cfg.index, cfg.seed, progress=False)
    root = Path(cfg.run_dir) / "tiny"
    teacher = resolve_teacher(cfg.synth.teacher, root)
    ident = job.identity(cfg, cat, teacher)
    out = root / cfg.name
    job.check_identity(out, ident)
    shards = plan_shards(job.split_queries(cat, cfg, encoder), cfg.synth, cfg.seed, out)
    factory = job.scorer_factory(cfg.run_dir, spec, cfg.embed, cfg.index, cfg.reward, cfg.seed)
    run_shards(shards[:1], teacher.generation(cfg), factory, cfg.synth, ident, cfg.workers, {"dataset": "tiny", "run": "b"}, False)
    Path(shards[1].path).with_name(".part-00001.parquet.x1y2.tmp").write_bytes(b"PAR1 half a file")
    with pytest.raises(DataError, match="did not finish"):
        read_targets(out, "train")
    assert [s.index for s in pending_shards(shards, ident)] == [1, 2]
    stamp = Path(shards[0].path).stat().st_mtime_ns

    result = job.run(cfg, progress=False)["tiny"]
    assert result["ran"] == 2 and Path(shards[0].path).stat().st_mtime_ns == stamp  # finished shard kept
    assert table_rows(out) == expected  # no row lost, none duplicated, identical values


@pytest.mark.faults
def test_a_worker_killed_mid_shard_is_restarted_and_every_target_is_written_once(ray_local, tmp_path,
                                                                                 tiny_rl_source, tiny_policy):
    """A real SIGKILL of a synthesis worker's process while it runs a shard: Ray restarts the actor and reruns the
    shard, and the targets equal an uninterrupted run's, row for row (none lost, none twice)."""
    job.run(synth_config(tmp_path / "a", tiny_rl_source, tiny_policy), progress=False)
    expected = table_rows(tmp_path / "a" / "tiny" / "synth")
    with killing("ray::SynthWorker.run") as killed:
        result = job.run(synth_config(tmp_path / "b", tiny_rl_source, tiny_policy), progress=False)
    assert killed, "no synthesis worker was seen running a shard"
    assert result["tiny"]["ran"] == 3
    assert table_rows(tmp_path / "b" / "tiny" / "synth") == expected


@pytest.mark.faults
@pytest.mark.slow
def test_without_restarts_a_killed_worker_stops_the_job_naming_it_and_a_rerun_completes(ray_local, tmp_path,
                                                                                        tiny_rl_source, tiny_policy):
    """The same kill with `workers.restarts=0`: the job stops naming the worker and the shard; the rerun resumes from
    the finished shards and ends with an uninterrupted run's rows."""
    job.run(synth_config(tmp_path / "a", tiny_rl_source, tiny_policy), progress=False)
    expected = table_rows(tmp_path / "a" / "tiny" / "synth")
    cfg = synth_config(tmp_path / "b", tiny_rl_source, tiny_policy, "workers.restarts=0")
    with killing("ray::SynthWorker.run") as killed, pytest.raises(R4TError, match=r"synthesis worker \d died on "
                                                                                  r"shard train/\d after 0 restarts"):
        job.run(cfg, progress=False)
    assert killed
    assert job.run(cfg, progress=False)["tiny"]["ran"] >= 1
    assert table_rows(tmp_path / "b" / "tiny" / "synth") == expected


def test_folder_of_another_synthesis_is_refused(ray_local, tmp_path, tiny_rl_source, tiny_policy):
    job.run(synth_config(tmp_path, tiny_rl_source, tiny_policy), progress=False)
    with pytest.raises(DataError, match="field 'samples'"):
        job.run(synth_config(tmp_path, tiny_rl_source, tiny_policy, "synth.samples=2"), progress=False)


def test_wscr_targets_are_padded_subquery_embeddings(ray_local, tmp_path, tiny_source, tiny_policy, encoder):
    cfg = synth_config(tmp_path, tiny_source, tiny_policy, "synth.task=wscr", "synth.rows=4", "synth.keep_top=2")
    out = Path(job.run(cfg, progress=False)["tiny"]["out"])
    table = read_targets(out, "train")
    x, valid = target_arrays(table)
    assert (table.column("n_valid").to_numpy() == TINY_K).all() and not valid[:, TINY_K:].any()
    assert np.abs(x[:, TINY_K:]).max() == 0
    for target, subs in zip(x, table.column("subqueries").to_pylist()):
        np.testing.assert_allclose(target[:TINY_K], encoder.encode(subs), atol=1e-5)
    counts = {}
    for qid in table.column("query_id").to_pylist():
        counts[qid] = counts.get(qid, 0) + 1
    assert max(counts.values()) <= 2  # keep_top
    rec = table.column("recall").to_numpy()
    assert np.all((rec >= 0) & (rec <= 1))


def test_teacher_and_config_errors(tmp_path, tiny_rl_source, tiny_policy):
    run = tmp_path / "tiny" / "rl"
    (run / "checkpoints" / "step-000002").mkdir(parents=True)
    cfg = synth_config(tmp_path, tiny_rl_source, tiny_policy, "synth.teacher=rl")
    with pytest.raises(DataError, match="has not finished"):
        resolve_teacher(cfg.synth.teacher, tmp_path / "tiny")
    with pytest.raises(ConfigError, match="synth.teacher"):
        resolve_teacher("nowhere", tmp_path / "tiny")
    with pytest.raises(ConfigError, match="synth.rows"):
        synth_config(tmp_path, tiny_rl_source, tiny_policy, "synth.task=wscr", "synth.rows=2")
    with pytest.raises(ConfigError, match="synth.keep_top"):
        synth_config(tmp_path, tiny_rl_source, tiny_policy, "synth.keep_top=9")
