"""Damaged artifacts (a file cut short by a full disk or a killed copy, a file from another run) are refused with
an error that names the file (r4t.errors.DataError: one line from the entry points), never a traceback from
safetensors, Arrow or faiss, and never read as whole."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_serve import tiny_artifacts

from r4t.data.dataset import Dataset
from r4t.diffusion.checkpoint import WEIGHTS, load_model
from r4t.errors import DataError
from r4t.index import ItemIndex
from r4t.io import write_json
from r4t.policy.model import load_policy
from r4t.synth.targets import MANIFEST_FILE, read_targets

pytestmark = pytest.mark.faults


def cut_short(path: Path) -> Path:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    return path


@pytest.fixture
def run_dir(tmp_path: Path, tiny_source: Path, encoder) -> Path:
    return tiny_artifacts(tmp_path, tiny_source, encoder)


def test_a_denoiser_cut_short_is_refused_naming_its_file(run_dir: Path) -> None:
    weights = cut_short(run_dir / "tiny" / "diffusion" / "model" / WEIGHTS)
    with pytest.raises(DataError, match=str(weights)):
        load_model(weights.parent)


def test_a_policy_cut_short_is_refused_naming_its_folder(tmp_path: Path, tiny_policy: Path) -> None:
    folder = Path(shutil.copytree(tiny_policy, tmp_path / "policy"))
    cut_short(folder / "model.safetensors")
    with pytest.raises(DataError, match=str(folder)):
        load_policy(folder)


def test_a_dataset_file_cut_short_is_refused_naming_it(run_dir: Path) -> None:
    items = cut_short(run_dir / "tiny" / "data" / "items.parquet")
    with pytest.raises(DataError, match=str(items)):
        Dataset.load(items.parent)


def test_a_target_shard_cut_short_is_refused_naming_it(tmp_path: Path) -> None:
    shard = tmp_path / "targets" / "train" / "part-00000.parquet"
    shard.parent.mkdir(parents=True)
    pq.write_table(pa.table({"query_id": [f"q{i}" for i in range(200)], "x": np.arange(200.0)}), shard)
    write_json(tmp_path / MANIFEST_FILE, {"splits": {"train": {"shards": {shard.name: 200}}}})
    assert read_targets(tmp_path, "train").num_rows == 200
    cut_short(shard)
    with pytest.raises(DataError, match=str(shard)):
        read_targets(tmp_path, "train")


def test_an_index_file_from_another_catalog_is_refused_naming_it(run_dir: Path, tmp_path: Path) -> None:
    folder = run_dir / "tiny" / "index"
    other = ItemIndex.build(np.eye(4, ItemIndex.load(folder).dim, dtype=np.float32), ["a", "b", "c", "d"]).save(
        tmp_path / "other")
    shutil.copy(other / "shard-000.faiss", folder / "shard-000.faiss")
    with pytest.raises(DataError, match="shard-000.faiss"):
        ItemIndex.load(folder)
