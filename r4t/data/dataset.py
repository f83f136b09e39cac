"""A dataset = a catalog, its reference sets and its queries, stored as three Parquet files in one folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from r4t.data.schema import (
    QUERIES_SCHEMA, SETS_SCHEMA, catalog_hash, read_parquet, validate_catalog, validate_queries, validate_sets,
    write_parquet,
)
from r4t.errors import DataError
from r4t.io import read_json, sha256_file, write_json

ITEMS_FILE, SETS_FILE, QUERIES_FILE, INFO_FILE = "items.parquet", "sets.parquet", "queries.parquet", "dataset.json"


def queries_from_sets(sets: pa.Table) -> pa.Table:
    """The queries of a catalog given with reference sets but no queries.parquet: each set's query serves both
    tasks, as the WSCR query of its set and as an OAR intent, in the set's split."""
    rows = [{"query_id": f"{task}-{set_id}", "text": query, "split": split, "task": task,
             "set_id": set_id if task == "wscr" else None}
            for task in ("wscr", "oar")
            for set_id, query, split in zip(*(sets.column(c).to_pylist() for c in ("set_id", "query", "split")))]
    return pa.Table.from_pylist(rows, schema=QUERIES_SCHEMA)


@dataclass
class Dataset:
    name: str
    items: pa.Table
    sets: pa.Table
    queries: pa.Table

    def validate(self, where: str | None = None) -> "Dataset":
        where = where or self.name
        self.items = validate_catalog(self.items, f"{where}/{ITEMS_FILE}")
        self.sets = validate_sets(self.sets, set(self.items.column("item_id").to_pylist()), f"{where}/{SETS_FILE}")
        self.queries = validate_queries(self.queries, set(self.sets.column("set_id").to_pylist()),
                                        f"{where}/{QUERIES_FILE}")
        return self

    @property
    def catalog_hash(self) -> str:
        return catalog_hash(self.items)

    def queries_for(self, task: str, split: str) -> pa.Table:
        mask = [t == task and s == split for t, s in zip(self.queries.column("task").to_pylist(),
                                                        self.queries.column("split").to_pylist())]
        return self.queries.filter(pa.array(mask, pa.bool_()))

    def reference_sets(self) -> dict[str, list[str]]:
        return dict(zip(self.sets.column("set_id").to_pylist(), self.sets.column("item_ids").to_pylist()))

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the three tables, then dataset.json last: its presence marks the folder complete."""
        folder = Path(folder)
        self.validate(str(folder))
        write_parquet(self.items, folder / ITEMS_FILE)
        write_parquet(self.sets, folder / SETS_FILE)
        write_parquet(self.queries, folder / QUERIES_FILE)
        write_json(folder / INFO_FILE, {
            "name": self.name, "catalog_hash": self.catalog_hash, "items": self.items.num_rows,
            "sets": self.sets.num_rows, "queries": self.queries.num_rows,
            "files": {f: sha256_file(folder / f) for f in (ITEMS_FILE, SETS_FILE, QUERIES_FILE)},
        })
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Dataset":
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"{folder}: dataset folder not found")
        info_path = folder / INFO_FILE
        info = read_json(info_path) if info_path.is_file() else {}
        # dataset.json is written last with the hashes of the tables: a save that died half-way (new items,
        # old sets) no longer matches it. A folder a user wrote by hand has no dataset.json at all.
        for file, digest in info.get("files", {}).items():
            if not (folder / file).is_file() or sha256_file(folder / file) != digest:
                raise DataError(f"{folder / file}: missing or does not match {info_path} (an interrupted save?); "
                                f"rebuild the dataset")
        name = info.get("name", folder.name)
        def optional(file: str, schema: pa.Schema) -> pa.Table:
            return read_parquet(folder / file) if (folder / file).is_file() else schema.empty_table()

        sets = optional(SETS_FILE, SETS_SCHEMA)
        queries = (read_parquet(folder / QUERIES_FILE) if (folder / QUERIES_FILE).is_file()
                   else queries_from_sets(validate_sets(sets, None, f"{folder}/{SETS_FILE}")))
        ds = cls(name=name, items=read_parquet(folder / ITEMS_FILE), sets=sets, queries=queries)
        return ds.validate(str(folder))

