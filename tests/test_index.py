"""ItemIndex: exact and approximate search, sharding, save/load with manifest checks, input errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from r4t.errors import DataError, ManifestMismatch
from r4t.index import IDS_FILE, MANIFEST_FILE, ItemIndex, merge_topk
from r4t.io import check_manifest, read_json, write_json

DIM = 32


def unit(rng: np.random.Generator, n: int, d: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, list[str], np.ndarray]:
    rng = np.random.default_rng(0)
    emb = unit(rng, 1000)
    return emb, [f"i{i}" for i in range(len(emb))], unit(rng, 40)


def brute_force(emb: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = q.astype(np.float64) @ emb.astype(np.float64).T
    rows = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, rows, 1), rows


# -------------------------------------------------------------------------------------------------- exact search


def test_flat_equals_brute_force(data) -> None:
    emb, ids, q = data
    index = ItemIndex.build(emb, ids, "Flat")
    scores, rows = index.search(q, 10)
    want_scores, want_rows = brute_force(emb, q, 10)
    assert scores.shape == rows.shape == (len(q), 10)
    assert scores.dtype == np.float32 and rows.dtype == np.int64
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-7)  # best first
    assert index.dim == DIM and index.item_ids == ids
    assert index.manifest["count"] == 1000 and index.manifest["dim"] == DIM
    assert index.manifest["metric"] == "inner_product" and index.manifest["factory"] == "Flat"


def test_item_finds_itself(data) -> None:
    emb, ids, _ = data
    index = ItemIndex.build(emb, ids, "Flat")
    scores, rows = index.search(emb[:25], 1)
    np.testing.assert_array_equal(rows[:, 0], np.arange(25))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat"])
def test_sharded_equals_unsharded(data, factory: str) -> None:
    emb, ids, q = data
    one = ItemIndex.build(emb, ids, factory, shards=1, nprobe=16)
    three = ItemIndex.build(emb, ids, factory, shards=3, nprobe=16)
    assert len(three.shards) == 3 and three.manifest["shards"] == 3
    assert sum(s.ntotal for s in three.shards) == 1000
    np.testing.assert_array_equal(three.offsets, [0, 334, 667, 1000])
    s1, r1 = one.search(q, 10)
    s3, r3 = three.search(q, 10)
    np.testing.assert_array_equal(r3, r1)
    np.testing.assert_allclose(s3, s1, atol=1e-6)
    assert s3.dtype == np.float32 and r3.dtype == np.int64


def test_sharded_k_larger_than_a_shard() -> None:
    rng = np.random.default_rng(1)
    emb = unit(rng, 10)
    q = unit(rng, 5)
    index = ItemIndex.build(emb, [str(i) for i in range(10)], "Flat", shards=3)
    scores, rows = index.search(q, 8)
    want_scores, want_rows = brute_force(emb, q, 8)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


@pytest.mark.parametrize("shards", [1, 3])
def test_k_larger_than_catalog_is_clipped(shards: int) -> None:
    rng = np.random.default_rng(2)
    emb = unit(rng, 7)
    index = ItemIndex.build(emb, [str(i) for i in range(7)], "Flat", shards=shards)
    scores, rows = index.search(unit(rng, 3), 100)
    assert rows.shape == scores.shape == (3, 7)
    assert all(sorted(r) == list(range(7)) for r in rows.tolist())


def test_merge_topk_handles_missing_rows() -> None:
    scores = [np.array([[0.9, 0.1]], np.float32), np.array([[0.5, 0.0]], np.float32)]
    rows = [np.array([[3, -1]]), np.array([[7, 8]])]
    s, r = merge_topk(scores, rows, 3)
    np.testing.assert_array_equal(r, [[3, 7, 8]])  # the -1 (no result) never outranks a real item
    np.testing.assert_allclose(s, [[0.9, 0.5, 0.0]])


# -------------------------------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("factory, shards", [("Flat", 1), ("Flat", 3), ("IVF16,Flat", 2)])
def test_save_load_roundtrip(tmp_path: Path, data, factory: str, shards: int) -> None:
    emb, ids, q = data
    index = ItemIndex.build(emb, ids, factory, shards=shards, embed_manifest={"encoder": "fake", "dim": DIM})
    folder = index.save(tmp_path / "index")
    manifest = read_json(folder / MANIFEST_FILE)
    assert manifest["factory"] == factory and manifest["shards"] == shards and manifest["encoder"] == "fake"
    assert set(manifest["files"]) == {IDS_FILE} | {f"shard-{s:03d}.faiss" for s in range(shards)}
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    loaded = ItemIndex.load(folder, expect={"encoder": "fake", "factory": factory})
    assert loaded.item_ids == ids
    assert loaded.manifest == index.manifest  # the file hashes are not part of the in-memory manifest
    s0, r0 = index.search(q, 10)
    s1, r1 = loaded.search(q, 10)
    np.testing.assert_array_equal(r1, r0)
    np.testing.assert_array_equal(s1, s0)


def test_corrupted_shard_detected(tmp_path: Path, data) -> None:
    emb, ids, _ = data
    folder = ItemIndex.build(emb, ids, "Flat", shards=3).save(tmp_path / "index")
    shard = folder / "shard-001.faiss"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(DataError) as e:
        ItemIndex.load(folder)
    assert "shard-001.faiss" in str(e.value)


def test_missing_shard_detected(tmp_path: Path, data) -> None:
    emb, ids, _ = data
    folder = ItemIndex.build(emb, ids, "Flat", shards=2).save(tmp_path / "index")
    (folder / "shard-000.faiss").unlink()
    with pytest.raises(DataError, match="shard-000.faiss"):
        ItemIndex.load(folder)


def test_edited_item_ids_detected(tmp_path: Path, data) -> None:
    emb, ids, _ = data
    folder = ItemIndex.build(emb, ids, "Flat").save(tmp_path / "index")
    write_json(folder / IDS_FILE, list(reversed(ids)))
    with pytest.raises(DataError, match=IDS_FILE):
        ItemIndex.load(folder)


def test_missing_manifest(tmp_path: Path, data) -> None:
    emb, ids, _ = data
    folder = ItemIndex.build(emb, ids, "Flat").save(tmp_path / "index")
    (folder / MANIFEST_FILE).unlink()
    with pytest.raises(DataError, match=MANIFEST_FILE):
        ItemIndex.load(folder)


def test_expect_mismatch_names_field(tmp_path: Path, data) -> None:
    emb, ids, _ = data
    folder = ItemIndex.build(emb, ids, "Flat", embed_manifest={"encoder": "minilm", "dim": DIM}).save(tmp_path / "i")
    with pytest.raises(ManifestMismatch) as e:
        ItemIndex.load(folder, expect={"dim": DIM, "encoder": "other-model"})
    assert "'encoder'" in str(e.value) and "other-model" in str(e.value) and "minilm" in str(e.value)
    with pytest.raises(ManifestMismatch, match="catalog_hash"):
        ItemIndex.load(folder, expect={"catalog_hash": "abc"})  # a field the manifest lacks
    ItemIndex.load(folder, expect={"encoder": "minilm", "dim": DIM})  # matching fields load


def test_check_manifest() -> None:
    check_manifest({"a": 1, "b": 2}, {"a": 1}, "x")
    with pytest.raises(ManifestMismatch, match="where.*'b'"):
        check_manifest({"a": 1, "b": 2}, {"b": 3}, "where")


# -------------------------------------------------------------------------------------------------- approximate


def test_ivf_all_cells_equals_exact_and_per_call_nprobe(data) -> None:
    emb, ids, q = data
    exact = ItemIndex.build(emb, ids, "Flat").search(q, 10)
    ivf = ItemIndex.build(emb, ids, "IVF16,Flat", nprobe=16)
    s16, r16 = ivf.search(q, 10)
    np.testing.assert_array_equal(r16, exact[1])
    np.testing.assert_allclose(s16, exact[0], atol=1e-5)
    s1, r1 = ivf.search(q, 10, nprobe=1)
    assert (r1 != r16).any(axis=1).sum() > 0  # one cell of 16 misses some true neighbours
    assert ivf.nprobe == 16  # the per-call value does not become the default
    s_again, r_again = ivf.search(q, 10)
    np.testing.assert_array_equal(r_again, r16)  # the next default search visits all cells again


def test_ivf_default_nprobe_from_build(data) -> None:
    emb, ids, q = data
    exact = ItemIndex.build(emb, ids, "Flat").search(q, 10)[1]
    low = ItemIndex.build(emb, ids, "IVF16,Flat", nprobe=1)
    assert (low.search(q, 10)[1] != exact).any()
    np.testing.assert_array_equal(low.search(q, 10, nprobe=16)[1], exact)


def test_ivf_nprobe_on_loaded_index(tmp_path: Path, data) -> None:
    emb, ids, q = data
    exact = ItemIndex.build(emb, ids, "Flat").search(q, 10)[1]
    ItemIndex.build(emb, ids, "IVF16,Flat").save(tmp_path / "ivf")
    np.testing.assert_array_equal(ItemIndex.load(tmp_path / "ivf", nprobe=16).search(q, 10)[1], exact)
    assert (ItemIndex.load(tmp_path / "ivf", nprobe=1).search(q, 10)[1] != exact).any()


def test_hnsw_with_ef_search(data) -> None:
    emb, ids, q = data
    _, exact = brute_force(emb, q, 10)
    hnsw = ItemIndex.build(emb, ids, "HNSW32", ef_search=64)
    scores, rows = hnsw.search(q, 10, ef_search=512)
    assert rows.shape == (len(q), 10) and (rows >= 0).all()
    assert (rows == exact).mean() > 0.95
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    assert hnsw.ef_search == 64
    low = hnsw.search(q, 10, ef_search=10)[1]
    assert (low == exact).mean() <= (rows == exact).mean()


# -------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("factory", ["NotAnIndex", "IVF,Flat,,"])
def test_invalid_factory(data, factory: str) -> None:
    emb, ids, _ = data
    with pytest.raises(DataError) as e:
        ItemIndex.build(emb, ids, factory)
    assert repr(factory) in str(e.value) and "index.factory" in str(e.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_embeddings(data, bad: float) -> None:
    emb, ids, _ = data
    emb = emb.copy()
    emb[17, 3] = bad
    with pytest.raises(DataError, match="row 17"):
        ItemIndex.build(emb, ids, "Flat")


def test_ids_and_embeddings_disagree(data) -> None:
    emb, ids, _ = data
    with pytest.raises(DataError):
        ItemIndex.build(emb, ids[:-1], "Flat")
    with pytest.raises(DataError):
        ItemIndex.build(emb[0], ids[:1], "Flat")


@pytest.mark.parametrize("shards", [0, 1001])
def test_bad_shard_count(data, shards: int) -> None:
    emb, ids, _ = data
    with pytest.raises(DataError, match="index.shards"):
        ItemIndex.build(emb, ids, "Flat", shards=shards)


def test_query_dimension_mismatch(data) -> None:
    emb, ids, _ = data
    index = ItemIndex.build(emb, ids, "Flat")
    with pytest.raises(DataError, match="dimension"):
        index.search(np.zeros((2, DIM + 1), np.float32), 3)
    with pytest.raises(DataError):
        index.search(np.zeros(DIM, np.float32), 3)
