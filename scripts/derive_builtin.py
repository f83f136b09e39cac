"""Derive the built-in datasets shipped in r4t/data/builtin/ from the raw public data.

    python scripts/derive_builtin.py /path/to/data   # folder holding polyvore/ and playlists/ (raw JSONL)

Run by maintainers when the derivation changes; the product itself only reads the committed Parquet files.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from r4t.data.catalogs import BUILTIN_ROOT
from r4t.data.formats import load_source

NOTICES = {
    "polyvore": """# polyvore (built-in dataset of r4t)

Derived from the Polyvore outfit dataset of Han et al., "Learning Fashion Compatibility with Bidirectional
LSTMs" (ACM Multimedia 2017), distributed through the GitHub repository xthan/polyvore-dataset under the
Apache License 2.0 (validation split of the Maryland Polyvore data). The item names and outfit titles are
Polyvore users' content, provided for research use.

r4t derived `items.parquet`, `sets.parquet` and `queries.parquet` from it with `scripts/derive_builtin.py`
(filters and splits: see `r4t/data/fashion.py` and docs/stages.md (Data)).
""",
    "playlists": """# playlists (built-in dataset of r4t)

Derived from the hand-curated playlists of the GitHub repository HariSekhon/Spotify-Playlists,
Copyright 2012 Hari Sekhon, under the MIT licence (LICENSE beside this file).

r4t derived `items.parquet`, `sets.parquet` and `queries.parquet` from it with `scripts/derive_builtin.py`
(catalog, sampling and splits: see `r4t/data/music.py` and docs/stages.md (Data)).
""",
}


def main(raw_root: str) -> None:
    raw = Path(raw_root)
    sources = {"polyvore": ("fashion_jsonl", raw / "polyvore"),
               "playlists": ("playlists_jsonl", raw / "playlists" / "playlists.jsonl")}
    for name, (fmt, path) in sources.items():
        ds = load_source(fmt, str(path), name=name)
        out = ds.save(BUILTIN_ROOT / name)
        (out / "NOTICE.md").write_text(NOTICES[name])
        if name == "playlists":
            shutil.copyfile(raw / "playlists" / "LICENSE", out / "LICENSE")
        print(f"{name}: {ds.items.num_rows} items, {ds.sets.num_rows} sets, {ds.queries.num_rows} queries -> {out}")


if __name__ == "__main__":
    main(sys.argv[1])
