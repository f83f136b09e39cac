"""Where a stage gets its dataset: a built-in one shipped in the package, an r4t folder, or a public format."""

from __future__ import annotations

from pathlib import Path

from r4t.config import BUILTIN_DATASETS, DatasetSpec
from r4t.data.dataset import Dataset
from r4t.errors import DataError

BUILTIN_ROOT = Path(__file__).parent / "builtin"


def builtin_dir(name: str) -> Path:
    if name not in BUILTIN_DATASETS:
        raise DataError(f"unknown built-in dataset {name!r}; built-in: {list(BUILTIN_DATASETS)}")
    return BUILTIN_ROOT / name


def load_dataset(spec: DatasetSpec, seed: int = 0) -> Dataset:
    if spec.format == "builtin":
        ds = Dataset.load(builtin_dir(spec.name))
        ds.name = spec.name
        return ds
    if spec.format == "r4t":
        ds = Dataset.load(spec.path)
        ds.name = spec.name
        return ds
    from r4t.data.formats import load_source

    return load_source(spec.format, spec.path, name=spec.name, seed=seed)
