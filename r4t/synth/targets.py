"""The targets artifact: Parquet shards of synthesized target sets, one row per kept fan-out sample.

    <out>/targets/<split>/part-NNNNN.parquet   written whole or not at all (temporary name, then rename)
    <out>/manifest.json                        written last: identity, per-split counts, sigma_data

Every shard carries the synthesis identity (teacher hash, task, L, d, encoder, catalog, ...) in its Parquet
metadata, so a rerun can tell a finished shard of *this* synthesis from a stale one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from r4t.errors import DataError
from r4t.io import atomic_path, read_json

MANIFEST_FILE = "manifest.json"
IDENTITY_KEY = b"r4t.synth"
_SHARD = re.compile(r"^part-(\d{5})\.parquet$")


def target_schema(rows: int, dim: int) -> pa.Schema:
    f32 = pa.float32()
    return pa.schema([
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("sample", pa.int32(), nullable=False),  # index of this fan-out among the query's S samples
        pa.field("query_emb", pa.list_(f32, dim), nullable=False),
        pa.field("target", pa.list_(pa.list_(f32, dim), rows), nullable=False),  # L x d, zero rows past n_valid
        pa.field("n_valid", pa.int16(), nullable=False),
        pa.field("reward", f32, nullable=False),
        pa.field("ground", f32), pa.field("div", f32), pa.field("align", f32), pa.field("recall", f32),
        pa.field("subqueries", pa.list_(pa.string()), nullable=False),
        pa.field("item_ids", pa.list_(pa.string()), nullable=False),  # OAR: the target's items; WSCR: top-1s
        pa.field("policy_hash", pa.string(), nullable=False),
    ])


def shard_path(out: Path, split: str, shard: int) -> Path:
    return out / "targets" / split / f"part-{shard:05d}.parquet"


def write_shard(path: Path, columns: dict, rows: int, dim: int, identity: dict) -> int:
    """Write one shard atomically. columns: name → list/array; `target` [n, L, d], `query_emb` [n, d]."""
    n = len(columns["query_id"])
    schema = target_schema(rows, dim).with_metadata({IDENTITY_KEY: json.dumps(identity, sort_keys=True)})
    arrays = []
    for field in schema:
        value = columns[field.name]
        if field.name == "target":
            flat = pa.array(np.asarray(value, np.float32).reshape(-1), pa.float32())
            value = pa.FixedSizeListArray.from_arrays(pa.FixedSizeListArray.from_arrays(flat, dim), rows)
        elif field.name == "query_emb":
            value = pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(value, np.float32).reshape(-1)), dim)
        else:
            value = pa.array(value, field.type)
        arrays.append(value)
    table = pa.Table.from_arrays(arrays, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return n


def shard_identity(path: Path) -> dict | None:
    """The identity a finished shard was written with, or None if the file is not a readable shard."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return None
    return json.loads(meta[IDENTITY_KEY]) if IDENTITY_KEY in meta else None


def finished_shards(out: Path, split: str) -> list[Path]:
    folder = out / "targets" / split
    return sorted(p for p in folder.glob("part-*.parquet") if _SHARD.match(p.name)) if folder.is_dir() else []


def read_manifest(out: Path) -> dict:
    """The manifest of a finished synthesis; a folder without one was not finished and is refused."""
    if not (Path(out) / MANIFEST_FILE).is_file():
        raise DataError(f"{out}: no {MANIFEST_FILE}, so the synthesis there did not finish; rerun "
                        "`python -m r4t.jobs.synth` (it resumes from the finished shards)")
    return read_json(Path(out) / MANIFEST_FILE)


def read_targets(out: Path, split: str, columns: list[str] | None = None) -> pa.Table:
    """All shards of a split listed in the manifest, checked against its row counts."""
    manifest = read_manifest(out)
    listed = manifest["splits"].get(split)
    if listed is None:
        raise DataError(f"{out}/{MANIFEST_FILE}: no split {split!r}; synthesized splits: {sorted(manifest['splits'])}")
    tables = []
    for name, count in listed["shards"].items():
        path = Path(out) / "targets" / split / name
        if not path.is_file():
            raise DataError(f"{path}: listed in the manifest but missing")
        try:
            table = pq.read_table(path, columns=columns)
        except (OSError, pa.ArrowException) as e:  # cut short (a killed copy, a full disk)
            raise DataError(f"{path}: not a readable Parquet shard ({str(e).splitlines()[0]})") from None
        if table.num_rows != count:
            raise DataError(f"{path}: {table.num_rows} rows, the manifest says {count}")
        tables.append(table)
    if not tables:
        raise DataError(f"{out}: split {split!r} has no target rows")
    return pa.concat_tables(tables)


def dense(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A (nested) fixed-size-list column (`target` L x d, `query_emb` d) → a dense array [n, *sizes]."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    shape, values = [], column
    while pa.types.is_fixed_size_list(values.type):
        shape.append(values.type.list_size)
        values = values.flatten()
    return values.to_numpy(zero_copy_only=False).reshape(len(column), *shape)


def valid_rows(n_valid: np.ndarray, rows: int) -> np.ndarray:
    """[n] counts of real rows → [n, rows] bool: row j of a target is real iff j < n_valid (padding after)."""
    return np.arange(rows)[None, :] < np.asarray(n_valid)[:, None]


def target_arrays(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(targets [n, L, d] float32, valid [n, L] bool) from a table with `target` and `n_valid`."""
    x = dense(table.column("target"))
    return x, valid_rows(table.column("n_valid").to_numpy(), x.shape[1])


def query_embeddings(table: pa.Table) -> np.ndarray:
    return dense(table.column("query_emb"))
