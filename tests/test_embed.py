"""The text encoder (the real packaged MiniLM) and the catalog embedding cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from r4t.embed import (
    DEFAULT_ENCODER, EMBEDDINGS_FILE, EMBEDDINGS_MANIFEST, TextEncoder, embed_catalog, load_embeddings,
    resolve_encoder_path, save_embeddings,
)
from r4t.errors import DataError
from r4t.io import read_json

TEXTS = ["red leather ankle boots", "a quiet acoustic album for a rainy sunday", "gold hoop earrings",
         "red leather ankle boots", "black wool fedora"]


class CountingEncode:
    """Wraps encoder.encode and counts calls."""

    def __init__(self, encoder) -> None:
        self.real, self.calls = encoder.encode, 0

    def __call__(self, texts, progress=False):
        self.calls += 1
        return self.real(texts, progress=progress)


@pytest.fixture
def counting(encoder, monkeypatch: pytest.MonkeyPatch) -> CountingEncode:
    wrapper = CountingEncode(encoder)
    monkeypatch.setattr(encoder, "encode", wrapper)
    return wrapper


# ------------------------------------------------------------------------------------------------ encode


def test_encode_shape_dtype_norm(encoder) -> None:
    emb = encoder.encode(TEXTS)
    assert encoder.dim == 384
    assert emb.shape == (len(TEXTS), 384)
    assert emb.dtype == np.float32
    assert emb.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(emb).all()


def test_encode_empty(encoder) -> None:
    for empty in ([], ()):
        emb = encoder.encode(empty)
        assert emb.shape == (0, 384) and emb.dtype == np.float32


def test_identical_texts_identical_vectors(encoder) -> None:
    emb = encoder.encode(TEXTS)
    np.testing.assert_array_equal(emb[0], emb[3])
    again = encoder.encode(TEXTS)
    np.testing.assert_array_equal(again, emb)
    alone = encoder.encode([TEXTS[0]])
    np.testing.assert_allclose(alone[0], emb[0], atol=1e-5)


def test_encode_is_semantic(encoder) -> None:
    q, a, b = encoder.encode(["leather boots", "red leather ankle boots", "gold hoop earrings"])
    assert q @ a > q @ b + 0.1


def test_batch_size_does_not_change_results(encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoder, "_known", {})  # the model itself, not texts a catalog taught the encoder
    full = encoder.encode(TEXTS)
    monkeypatch.setattr(encoder, "batch_size", 2)
    np.testing.assert_allclose(encoder.encode(TEXTS), full, atol=1e-5)


def test_catalog_texts_are_looked_up_not_re_encoded(encoder, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoder, "_known", {})
    catalog = TEXTS[:3]
    emb, _ = embed_catalog(catalog, "h", encoder, tmp_path / "cache", progress=False)
    ran: list[str] = []
    model_encode = encoder._model.encode

    def counting(texts, **kwargs):
        ran.extend(texts)
        return model_encode(texts, **kwargs)

    monkeypatch.setattr(encoder._model, "encode", counting)
    texts = [catalog[2], "a sub-query the catalog does not hold", catalog[0], catalog[2]]
    out = encoder.encode(texts)
    assert ran == ["a sub-query the catalog does not hold"]  # only the new text went through the model
    np.testing.assert_array_equal(out[[0, 2, 3]], emb[[2, 0, 2]])
    np.testing.assert_allclose(out, model_encode(texts, normalize_embeddings=True), atol=1e-5)


def test_manifest(encoder) -> None:
    m = encoder.manifest
    assert m["encoder"] == DEFAULT_ENCODER and m["dim"] == 384
    assert isinstance(m["weights_hash"], str) and len(m["weights_hash"]) == 64


def test_nan_embeddings_rejected(encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    def nan_encode(texts, **kwargs):
        out = np.ones((len(texts), 384), np.float32) / np.sqrt(384)
        out[1] = np.nan
        return out

    monkeypatch.setattr(encoder, "_known", {})
    monkeypatch.setattr(encoder._model, "encode", nan_encode)
    with pytest.raises(DataError) as e:
        encoder.encode(["fine", "the bad one", "fine too"])
    assert "non-finite" in str(e.value) and "'the bad one'" in str(e.value)


def test_nan_embeddings_never_cached(encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoder, "_known", {})
    monkeypatch.setattr(encoder._model, "encode", lambda texts, **kw: np.full((len(texts), 384), np.nan, np.float32))
    with pytest.raises(DataError):
        embed_catalog(TEXTS, "h", encoder, tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache" / EMBEDDINGS_MANIFEST).exists()
    assert not (tmp_path / "cache" / EMBEDDINGS_FILE).exists()


@pytest.mark.parametrize("model", ["/definitely/not/a/model", "not-minilm"])
def test_unknown_model_path(model: str) -> None:
    with pytest.raises(DataError) as e:
        TextEncoder(model)
    assert repr(model) in str(e.value)


def test_model_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="config.json"):
        resolve_encoder_path(str(tmp_path))


def test_default_model_resolves_offline() -> None:
    path = resolve_encoder_path(DEFAULT_ENCODER)
    assert (path / "config.json").is_file()


# ------------------------------------------------------------------------------------------------ cache


def test_embed_catalog_caches(encoder, counting: CountingEncode, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    emb, manifest = embed_catalog(TEXTS, "hash-1", encoder, cache, progress=False)
    assert counting.calls == 1
    assert emb.shape == (len(TEXTS), 384) and emb.dtype == np.float32
    assert manifest["catalog_hash"] == "hash-1" and manifest["count"] == len(TEXTS)
    assert manifest["encoder"] == encoder.manifest["encoder"] and manifest["weights_hash"] == encoder.manifest[
        "weights_hash"] and manifest["dim"] == 384
    assert (cache / EMBEDDINGS_FILE).is_file() and (cache / EMBEDDINGS_MANIFEST).is_file()
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]

    emb2, manifest2 = embed_catalog(TEXTS, "hash-1", encoder, cache, progress=False)
    assert counting.calls == 1  # served from the cache
    np.testing.assert_array_equal(emb2, emb)
    assert manifest2 == manifest


def test_embed_catalog_recomputes_on_new_catalog(encoder, counting: CountingEncode, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    embed_catalog(TEXTS[:2], "hash-1", encoder, cache, progress=False)
    emb, manifest = embed_catalog(TEXTS, "hash-2", encoder, cache, progress=False)
    assert counting.calls == 2
    assert manifest["catalog_hash"] == "hash-2" and emb.shape == (len(TEXTS), 384)
    assert read_json(cache / EMBEDDINGS_MANIFEST)["catalog_hash"] == "hash-2"
    embed_catalog(TEXTS, "hash-2", encoder, cache, progress=False)
    assert counting.calls == 2


def test_embed_catalog_recomputes_corrupted_array(encoder, counting: CountingEncode, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    good, _ = embed_catalog(TEXTS, "h", encoder, cache, progress=False)
    with open(cache / EMBEDDINGS_FILE, "wb") as f:  # a valid .npy, but not the one the manifest hashed
        np.save(f, np.zeros_like(good))
    with pytest.raises(DataError, match="sha256"):
        load_embeddings(cache)
    emb, _ = embed_catalog(TEXTS, "h", encoder, cache, progress=False)
    assert counting.calls == 2
    np.testing.assert_allclose(emb, good, atol=1e-6)
    np.testing.assert_allclose(load_embeddings(cache)[0], good, atol=1e-6)


def test_embed_catalog_recomputes_truncated_array(encoder, counting: CountingEncode, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    good, _ = embed_catalog(TEXTS, "h", encoder, cache, progress=False)
    raw = (cache / EMBEDDINGS_FILE).read_bytes()
    (cache / EMBEDDINGS_FILE).write_bytes(raw[: len(raw) // 2])
    emb, _ = embed_catalog(TEXTS, "h", encoder, cache, progress=False)
    assert counting.calls == 2
    np.testing.assert_allclose(emb, good, atol=1e-6)


def test_embed_catalog_recomputes_broken_manifest(encoder, counting: CountingEncode, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    embed_catalog(TEXTS, "h", encoder, cache, progress=False)
    (cache / EMBEDDINGS_MANIFEST).write_text("{not json")
    embed_catalog(TEXTS, "h", encoder, cache, progress=False)
    assert counting.calls == 2
    assert read_json(cache / EMBEDDINGS_MANIFEST)["catalog_hash"] == "h"


def test_embed_catalog_recomputes_other_weights(encoder, counting: CountingEncode, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    embed_catalog(TEXTS, "h", encoder, cache, progress=False)
    manifest = read_json(cache / EMBEDDINGS_MANIFEST)
    manifest["weights_hash"] = "0" * 64  # as if cached by other weights of the same model name
    (cache / EMBEDDINGS_MANIFEST).write_text(json.dumps(manifest))
    _, m = embed_catalog(TEXTS, "h", encoder, cache, progress=False)
    assert counting.calls == 2 and m["weights_hash"] == encoder.manifest["weights_hash"]


def test_save_load_embeddings(tmp_path: Path) -> None:
    emb = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    save_embeddings(tmp_path, emb, {"encoder": "x"})
    back, manifest = load_embeddings(tmp_path)
    np.testing.assert_array_equal(back, emb)
    assert manifest["encoder"] == "x" and manifest["count"] == 4 and len(manifest["sha256"]) == 64


def test_load_embeddings_rejects_wrong_dtype(tmp_path: Path) -> None:
    save_embeddings(tmp_path, np.zeros((3, 4), np.float64), {})
    with pytest.raises(DataError, match="float32"):
        load_embeddings(tmp_path)


def test_load_embeddings_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=EMBEDDINGS_MANIFEST):
        load_embeddings(tmp_path)
    save_embeddings(tmp_path, np.zeros((3, 4), np.float32), {})
    (tmp_path / EMBEDDINGS_FILE).unlink()
    with pytest.raises(DataError, match=EMBEDDINGS_FILE):
        load_embeddings(tmp_path)
