"""Parquet schemas of the data artifacts, and validated readers/writers for them.

catalog   items.parquet    item_id, text, category (+ optional attribute columns)
sets      sets.parquet     set_id, query, item_ids, split
queries   queries.parquet  query_id, text, split, task ("oar" | "wscr"), set_id (wscr only)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from r4t.errors import DataError
from r4t.io import atomic_path

SPLITS = ("train", "val", "test")
TASKS = ("oar", "wscr")

CATALOG_SCHEMA = pa.schema(
    [pa.field("item_id", pa.string(), nullable=False), pa.field("text", pa.string(), nullable=False),
     pa.field("category", pa.string(), nullable=False)]
)
SETS_SCHEMA = pa.schema(
    [pa.field("set_id", pa.string(), nullable=False), pa.field("query", pa.string(), nullable=False),
     pa.field("item_ids", pa.list_(pa.string()), nullable=False), pa.field("split", pa.string(), nullable=False)]
)
QUERIES_SCHEMA = pa.schema(
    [pa.field("query_id", pa.string(), nullable=False), pa.field("text", pa.string(), nullable=False),
     pa.field("split", pa.string(), nullable=False), pa.field("task", pa.string(), nullable=False),
     pa.field("set_id", pa.string(), nullable=True)]
)


def _check_columns(table: pa.Table, schema: pa.Schema, where: str) -> pa.Table:
    """Check required columns exist with castable types; return the table with those columns cast."""
    for field in schema:
        if field.name not in table.column_names:
            raise DataError(f"{where}: missing column '{field.name}' (expected {field.type}); "
                            f"found columns {table.column_names}")
        col = table.column(field.name)
        if col.type != field.type:
            try:
                col = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise DataError(f"{where}: column '{field.name}' has type {col.type}, expected {field.type}") from None
            table = table.set_column(table.column_names.index(field.name), field.name, col)
        if not field.nullable and col.null_count:
            row = col.to_pylist().index(None)
            raise DataError(f"{where}: column '{field.name}' has a null value at row {row}")
    return table


def _check_nonempty_text(table: pa.Table, column: str, where: str) -> None:
    for row, value in enumerate(table.column(column).to_pylist()):
        if value is None or not value.strip():
            raise DataError(f"{where}: column '{column}' is empty at row {row} (value {value!r})")


def _check_unique(table: pa.Table, column: str, where: str) -> None:
    seen: set[str] = set()
    for row, value in enumerate(table.column(column).to_pylist()):
        if value in seen:
            raise DataError(f"{where}: column '{column}' has duplicate value {value!r} at row {row}")
        seen.add(value)


def _check_allowed(table: pa.Table, column: str, allowed: tuple[str, ...], where: str) -> None:
    for row, value in enumerate(table.column(column).to_pylist()):
        if value is not None and value not in allowed:
            raise DataError(f"{where}: column '{column}' has value {value!r} at row {row}; allowed: {list(allowed)}")


def validate_catalog(table: pa.Table, where: str = "catalog") -> pa.Table:
    table = _check_columns(table, CATALOG_SCHEMA, where)
    if table.num_rows == 0:
        raise DataError(f"{where}: catalog has no items")
    _check_unique(table, "item_id", where)
    _check_nonempty_text(table, "text", where)
    return table


def validate_sets(table: pa.Table, item_ids: set[str] | None = None, where: str = "sets") -> pa.Table:
    table = _check_columns(table, SETS_SCHEMA, where)
    _check_unique(table, "set_id", where)
    _check_nonempty_text(table, "query", where)
    _check_allowed(table, "split", SPLITS, where)
    for row, ids in enumerate(table.column("item_ids").to_pylist()):
        if not ids:
            raise DataError(f"{where}: set at row {row} has no items")
        if item_ids is not None:
            missing = [i for i in ids if i not in item_ids]
            if missing:
                raise DataError(f"{where}: set at row {row} names items not in the catalog: {missing[:5]}")
    return table


def validate_queries(table: pa.Table, set_ids: set[str] | None = None, where: str = "queries") -> pa.Table:
    if "set_id" not in table.column_names:
        table = table.append_column("set_id", pa.nulls(table.num_rows, pa.string()))
    table = _check_columns(table, QUERIES_SCHEMA, where)
    _check_unique(table, "query_id", where)
    _check_nonempty_text(table, "text", where)
    _check_allowed(table, "split", SPLITS, where)
    _check_allowed(table, "task", TASKS, where)
    for row, (task, set_id) in enumerate(zip(table.column("task").to_pylist(), table.column("set_id").to_pylist())):
        if task == "wscr" and (set_id is None or (set_ids is not None and set_id not in set_ids)):
            raise DataError(f"{where}: wscr query at row {row} has set_id {set_id!r}, which names no reference set")
    return table


def write_parquet(table: pa.Table, path: str | os.PathLike) -> None:
    """Write atomically: readers see the old file or the whole new one, never a partial one."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_parquet(path: str | os.PathLike) -> pa.Table:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None


def catalog_hash(table: pa.Table) -> str:
    """Content hash of a catalog (ids and texts in order), independent of the file encoding."""
    h = hashlib.sha256()
    for item_id, text in zip(table.column("item_id").to_pylist(), table.column("text").to_pylist()):
        h.update(item_id.encode())
        h.update(b"\x00")
        h.update(text.encode())
        h.update(b"\x01")
    return h.hexdigest()
