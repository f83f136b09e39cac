"""Readers for the public data formats a user brings; each returns the Raw* records of r4t.data.raw.

Optional fields may be missing or null; a missing required key, a wrong type, a missing file or bad JSON
raises DataError naming the file, the record (index or line) and the key or value at fault.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from r4t.data.raw import RawItem, RawOutfit, RawPlaylist, RawTrack
from r4t.errors import DataError
from r4t.io import read_json

if TYPE_CHECKING:
    from r4t.data.dataset import Dataset

PathArg = str | os.PathLike[str]
Fashion = tuple[list[RawItem], list[RawOutfit]]

MARYLAND_FILES = ("train_no_dup.json", "valid_no_dup.json", "test_no_dup.json")
POLYVORE_VARIANTS = (None, "disjoint", "nondisjoint")
_REQUIRED: Any = object()


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _check(value: Any, typ: type | tuple[type, ...], where: str, what: str) -> Any:
    """Return value if it is a typ (bools are never ints), else raise DataError."""
    if isinstance(value, bool) or not isinstance(value, typ):
        names = " or ".join(t.__name__ for t in (typ if isinstance(typ, tuple) else (typ,)))
        raise DataError(f"{where}: {what} must be {names}, got {_show(value)}")
    return value


def _get(rec: Any, key: str, typ: type | tuple[type, ...], where: str, default: Any = _REQUIRED) -> Any:
    """rec[key] checked against typ; a missing or null key gives default, or an error if it is required."""
    _check(rec, dict, where, "record")
    if rec.get(key) is None:
        if default is _REQUIRED:
            raise DataError(f"{where}: missing required key '{key}'")
        return default
    return _check(rec[key], typ, where, f"key '{key}'")


def _each(value: Any, where: str) -> Iterator[tuple[str, Any]]:
    """Yield (where[i], element) for each element of a JSON list."""
    for i, elem in enumerate(_check(value, list, where, "value")):
        yield f"{where}[{i}]", elem


def _read_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    """Yield ("<path>: line <n>", record) for each non-blank line of a JSON Lines file."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e})") from None
    for n, line in enumerate(lines, 1):
        if line.strip():
            where = f"{path}: line {n}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            yield where, rec


def _name_or_url(rec: Any, key: str, where: str) -> str:
    """rec[key] if non-empty, else rec["url_name"], else ""."""
    return _get(rec, key, str, where, "") or _get(rec, "url_name", str, where, "")


def _category(rec: Any, key: str, where: str) -> str:
    """rec[key] if non-empty, else str(rec["category_id"]); one of the two is required."""
    value = _get(rec, key, str, where, "") or _get(rec, "category_id", (str, int), where, "")
    if value == "":
        raise DataError(f"{where}: missing required key '{key}' (or 'category_id')")
    return str(value)


def _files(path: Path, pattern: str) -> list[Path]:
    """The files matching pattern in folder path, sorted by name; [path] if it is no folder."""
    if not path.is_dir():
        return [path]  # read_json reports it if missing
    files = [path / f for f in sorted(glob.glob(pattern, root_dir=path))]
    if not files:
        raise DataError(f"{path}: no file matching '{pattern}' in this folder")
    return files


def _maryland_categories(path: Path) -> dict[int, str]:
    """category_id.txt: lines "<id> <Category Name>"; no file gives no names."""
    if not path.is_file():
        return {}
    names: dict[int, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split(None, 1)
        if not parts:
            continue
        if not parts[0].isdigit():
            raise DataError(f"{path}: line {n}: expected '<id> <Category Name>', got {line!r}")
        names[int(parts[0])] = parts[-1].strip()
    return names


def read_maryland_polyvore(path: PathArg) -> Fashion:
    """Maryland Polyvore (Han et al. 2017): one *_no_dup.json file, or a folder holding any of them."""
    path = Path(path)
    files = [path / f for f in MARYLAND_FILES if (path / f).is_file()] if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: none of {list(MARYLAND_FILES)} in this folder")
    categories = _maryland_categories(files[0].parent / "category_id.txt")
    items: dict[str, RawItem] = {}
    outfits: dict[str, RawOutfit] = {}
    for file in files:
        for where, rec in _each(read_json(file), f"{file}: outfits"):
            set_id = _get(rec, "set_id", str, where)
            item_ids = []
            for w, it in _each(_get(rec, "items", list, where), f"{where}.items"):
                item_id = f"{set_id}_{_get(it, 'index', int, w)}"
                cat = _get(it, "categoryid", int, w)
                items.setdefault(item_id, RawItem(item_id, _get(it, "name", str, w), categories.get(cat, str(cat))))
                item_ids.append(item_id)
            outfits.setdefault(set_id, RawOutfit(set_id, _get(rec, "name", str, where), tuple(dict.fromkeys(item_ids)),
                                                 _get(rec, "desc", str, where, "")))
    return list(items.values()), list(outfits.values())


def read_polyvore_outfits(folder: PathArg, splits: tuple[str, ...] = ("train", "valid", "test"),
                          variant: str | None = None) -> Fashion:
    """Polyvore Outfits (Vasileva et al. 2018): the items of the outfits in {split}.json, directly in
    folder or in its disjoint/ or nondisjoint/ subfolder (variant=None: the folder itself if it holds the split
    files, else nondisjoint/, else disjoint/), with the folder's metadata and titles."""
    folder = Path(folder)
    if variant is None and not (folder / f"{splits[0]}.json").is_file():
        # The public download keeps the split files only in nondisjoint/ and disjoint/.
        variant = next((v for v in ("nondisjoint", "disjoint") if (folder / v).is_dir()), None)
    if variant not in POLYVORE_VARIANTS:
        raise DataError(f"polyvore_outfits: variant {variant!r} is not one of {list(POLYVORE_VARIANTS)}")
    meta_path, titles_path = folder / "polyvore_item_metadata.json", folder / "polyvore_outfit_titles.json"
    meta = _check(read_json(meta_path), dict, str(meta_path), "content")
    titles = _check(read_json(titles_path), dict, str(titles_path), "content") if titles_path.is_file() else {}
    items: dict[str, RawItem] = {}
    outfits: dict[str, RawOutfit] = {}
    for split in splits:
        file = folder / (variant or "") / f"{split}.json"
        for where, rec in _each(read_json(file), f"{file}: outfits"):
            set_id = _get(rec, "set_id", str, where)
            item_ids = []
            for w, it in _each(_get(rec, "items", list, where), f"{where}.items"):
                item_id = _get(it, "item_id", str, w)
                if item_id not in items:
                    if item_id not in meta:
                        raise DataError(f"{w}: item_id {item_id!r} not found in {meta_path}")
                    m_where = f"{meta_path}: item {item_id!r}"
                    items[item_id] = RawItem(item_id, _name_or_url(meta[item_id], "title", m_where),
                                             _category(meta[item_id], "semantic_category", m_where))
                item_ids.append(item_id)
            title = _name_or_url(titles.get(set_id, {}), "title", f"{titles_path}: outfit {set_id!r}")
            outfits.setdefault(set_id, RawOutfit(set_id, title, tuple(dict.fromkeys(item_ids))))
    return list(items.values()), list(outfits.values())


def read_mpd_slices(path: PathArg) -> list[RawPlaylist]:
    """Spotify Million Playlist Dataset: one mpd.slice.<a>-<b>.json, or every such slice in a folder."""
    playlists: dict[str, RawPlaylist] = {}
    for file in _files(Path(path), "mpd.slice.*.json"):
        for where, rec in _each(_get(read_json(file), "playlists", list, str(file)), f"{file}: playlists"):
            pid = str(_get(rec, "pid", int, where))
            tracks = [(_get(t, "pos", int, w), RawTrack(_get(t, "artist_name", str, w), _get(t, "track_name", str, w)))
                      for w, t in _each(_get(rec, "tracks", list, where), f"{where}.tracks")]
            tracks.sort(key=lambda pos_track: pos_track[0])
            playlists.setdefault(pid, RawPlaylist(pid, _get(rec, "name", str, where), tuple(t for _, t in tracks),
                                                  _get(rec, "description", str, where, "")))
    return list(playlists.values())


def read_fashion_jsonl(folder: PathArg) -> Fashion:
    """r4t exchange format: items.jsonl and outfits.jsonl in folder."""
    folder = Path(folder)
    items: dict[str, RawItem] = {}
    for where, rec in _read_jsonl(folder / "items.jsonl"):
        item_id = _get(rec, "item_id", str, where)
        items.setdefault(item_id, RawItem(item_id, _get(rec, "name", str, where), _category(rec, "category", where)))
    outfits: dict[str, RawOutfit] = {}
    for where, rec in _read_jsonl(folder / "outfits.jsonl"):
        set_id = _get(rec, "set_id", str, where)
        item_ids = [_check(i, str, w, "item id")
                    for w, i in _each(_get(rec, "item_ids", list, where), f"{where}: item_ids")]
        outfits.setdefault(set_id, RawOutfit(set_id, _get(rec, "name", str, where), tuple(dict.fromkeys(item_ids)),
                                             _get(rec, "desc", str, where, "")))
    return list(items.values()), list(outfits.values())


def read_playlists_jsonl(path: PathArg) -> list[RawPlaylist]:
    """r4t exchange format: playlists.jsonl (the file, or a folder holding it); playlist_id = "path" or title."""
    path = Path(path)
    playlists: dict[str, RawPlaylist] = {}
    for where, rec in _read_jsonl(path / "playlists.jsonl" if path.is_dir() else path):
        title = _get(rec, "title", str, where)
        tracks = tuple(RawTrack(_get(t, "artist", str, w), _get(t, "track", str, w))
                       for w, t in _each(_get(rec, "tracks", list, where), f"{where}: tracks"))
        pid = _get(rec, "path", str, where, "") or title
        playlists.setdefault(pid, RawPlaylist(pid, title, tracks, _get(rec, "description", str, where, "")))
    return list(playlists.values())


SOURCE_FORMATS: dict[str, tuple[str, Callable[[PathArg], Any]]] = {
    "maryland": ("fashion", read_maryland_polyvore),
    "polyvore_outfits": ("fashion", read_polyvore_outfits),
    "mpd": ("music", read_mpd_slices),
    "fashion_jsonl": ("fashion", read_fashion_jsonl),
    "playlists_jsonl": ("music", read_playlists_jsonl),
}


def load_source(fmt: str, path: PathArg, name: str | None = None, seed: int = 0) -> Dataset:
    """Read path in format fmt and build its domain's Dataset (named name, else after path)."""
    if fmt not in SOURCE_FORMATS:
        raise DataError(f"unknown source format {fmt!r}; known formats: {', '.join(SOURCE_FORMATS)}")
    domain, reader = SOURCE_FORMATS[fmt]
    records = reader(path)
    name = name or Path(path).stem or fmt
    if domain == "fashion":
        from r4t.data.fashion import build_fashion_dataset
        return build_fashion_dataset(name, *records, seed=seed)
    from r4t.data.music import build_music_dataset
    return build_music_dataset(name, records, seed=seed)
