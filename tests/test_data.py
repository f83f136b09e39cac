"""Datasets: the shipped built-in ones, the fashion and music builders, validation errors, atomic saves."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from r4t.config import DatasetSpec
from r4t.data.build import normalize_title
from r4t.data.catalogs import builtin_dir, load_dataset
from r4t.data.dataset import INFO_FILE, ITEMS_FILE, QUERIES_FILE, SETS_FILE, Dataset
from r4t.data.fashion import WEARABLE_GROUPS, build_fashion_dataset, coarse_group, is_noise_title
from r4t.data.intents import split_intents
from r4t.data.music import MAX_SET_SIZE, build_music_dataset, primary_artist
from r4t.data.raw import RawItem, RawOutfit, RawPlaylist, RawTrack
from r4t.data.schema import (
    CATALOG_SCHEMA, QUERIES_SCHEMA, SETS_SCHEMA, SPLITS, TASKS, read_parquet, write_parquet,
)
from r4t.errors import DataError
from r4t.io import sha256_file, atomic_path, read_json

COARSE_GROUPS = set(WEARABLE_GROUPS) | {"home", "beauty", "other"}


# ------------------------------------------------------------------------------------------ small hand-made data


def tiny_dataset(name: str = "tiny", n_items: int = 12, text_prefix: str = "item") -> Dataset:
    items = [{"item_id": f"i{i}", "text": f"{text_prefix} number {i}", "category": f"c{i % 3}"} for i in range(n_items)]
    sets = [{"set_id": "s0", "query": "first set", "item_ids": ["i0", "i1", "i2"], "split": "train"},
            {"set_id": "s1", "query": "second set", "item_ids": ["i3", "i4"], "split": "test"}]
    queries = [{"query_id": "q0", "text": "first set", "split": "train", "task": "wscr", "set_id": "s0"},
               {"query_id": "q1", "text": "second set", "split": "test", "task": "wscr", "set_id": "s1"},
               {"query_id": "q2", "text": "something open", "split": "test", "task": "oar", "set_id": None}]
    return Dataset(name, pa.Table.from_pylist(items, schema=CATALOG_SCHEMA),
                   pa.Table.from_pylist(sets, schema=SETS_SCHEMA),
                   pa.Table.from_pylist(queries, schema=QUERIES_SCHEMA))


def files_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def leftover_temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.startswith("."))


# ------------------------------------------------------------------------------------------ built-in datasets


@pytest.fixture(scope="module")
def polyvore() -> Dataset:
    return load_dataset(DatasetSpec("polyvore"))


@pytest.fixture(scope="module")
def playlists() -> Dataset:
    return load_dataset(DatasetSpec("playlists"))


@pytest.fixture(params=["polyvore", "playlists"])
def builtin(request: pytest.FixtureRequest) -> Dataset:
    return request.getfixturevalue(request.param)


def test_polyvore_size(polyvore: Dataset) -> None:
    assert polyvore.name == "polyvore"
    assert polyvore.items.num_rows == 8923
    info = read_json(builtin_dir("polyvore") / INFO_FILE)
    assert info["items"] == 8923
    assert info["catalog_hash"] == polyvore.catalog_hash
    assert info["sets"] == polyvore.sets.num_rows and info["queries"] == polyvore.queries.num_rows


def test_builtin_info_matches_contents(playlists: Dataset) -> None:
    info = read_json(builtin_dir("playlists") / INFO_FILE)
    assert info["catalog_hash"] == playlists.catalog_hash
    assert info["items"] == playlists.items.num_rows
    assert info["sets"] == playlists.sets.num_rows and info["queries"] == playlists.queries.num_rows


def test_builtin_nonempty_and_unique(builtin: Dataset) -> None:
    ids = builtin.items.column("item_id").to_pylist()
    assert len(ids) == len(set(ids)) > 1000
    assert all(t.strip() for t in builtin.items.column("text").to_pylist())
    assert builtin.sets.num_rows > 100
    set_ids = builtin.sets.column("set_id").to_pylist()
    assert len(set_ids) == len(set(set_ids))


def test_builtin_sets_reference_existing_items(builtin: Dataset) -> None:
    ids = set(builtin.items.column("item_id").to_pylist())
    for set_items in builtin.sets.column("item_ids").to_pylist():
        assert set_items and set(set_items) <= ids
        assert len(set_items) == len(set(set_items))


def test_builtin_splits_and_tasks_valid(builtin: Dataset) -> None:
    assert set(builtin.sets.column("split").to_pylist()) == set(SPLITS)
    assert set(builtin.queries.column("split").to_pylist()) == set(SPLITS)
    assert set(builtin.queries.column("task").to_pylist()) == set(TASKS)
    for task in TASKS:
        for split in SPLITS:
            assert builtin.queries_for(task, split).num_rows > 0, (task, split)


def test_builtin_wscr_queries_link_to_sets(builtin: Dataset) -> None:
    sets = {r["set_id"]: r for r in builtin.sets.to_pylist()}
    wscr = [q for q in builtin.queries.to_pylist() if q["task"] == "wscr"]
    assert len(wscr) == len(sets)  # one WSCR query per reference set
    for q in wscr:
        ref = sets[q["set_id"]]
        assert q["text"] == ref["query"]
        assert q["split"] == ref["split"]
    assert {q["set_id"] for q in wscr} == set(sets)
    assert all(q["set_id"] is None for q in builtin.queries.to_pylist() if q["task"] == "oar")


def test_builtin_oar_splits_disjoint(builtin: Dataset) -> None:
    texts = {s: {" ".join(t.casefold().split()) for t in builtin.queries_for("oar", s).column("text").to_pylist()}
             for s in SPLITS}
    assert texts["train"] and texts["test"]
    assert not texts["train"] & texts["test"]
    assert not texts["train"] & texts["val"]
    assert not texts["val"] & texts["test"]


def test_builtin_oar_queries_are_the_domain_intents(polyvore: Dataset, playlists: Dataset) -> None:
    for ds, domain in ((polyvore, "fashion"), (playlists, "music")):
        intents = split_intents(domain)
        for split in SPLITS:
            assert ds.queries_for("oar", split).column("text").to_pylist() == intents[split]


def test_polyvore_no_title_in_two_splits(polyvore: Dataset) -> None:
    splits_of = defaultdict(set)
    for title, split in zip(polyvore.sets.column("query").to_pylist(), polyvore.sets.column("split").to_pylist()):
        splits_of[normalize_title(title)].add(split)
    assert not {t: s for t, s in splits_of.items() if len(s) > 1}


def test_playlists_same_query_same_split(playlists: Dataset) -> None:
    # The split is a hash of the normalized title; identical queries (same title and description) share it.
    splits_of = defaultdict(set)
    for q, split in zip(playlists.sets.column("query").to_pylist(), playlists.sets.column("split").to_pylist()):
        splits_of[normalize_title(q)].add(split)
    assert not {t: s for t, s in splits_of.items() if len(s) > 1}


def test_polyvore_no_noise_titles(polyvore: Dataset) -> None:
    titles = polyvore.sets.column("query").to_pylist()
    assert not [t for t in titles if is_noise_title(t)]
    assert not [t for t in titles if t.strip().casefold().startswith("untitled #")]


def test_polyvore_categories_are_coarse_groups(polyvore: Dataset) -> None:
    cats = polyvore.items.column("category").to_pylist()
    assert set(cats) <= COARSE_GROUPS
    assert len(set(cats)) >= 10  # many groups, not everything in "other"
    assert cats.count("other") < 0.1 * len(cats)
    # the coarse group is derived from the kept fine category (and the name for generic categories)
    fine = polyvore.items.column("fine_category").to_pylist()
    texts = polyvore.items.column("text").to_pylist()
    assert len(set(fine)) > len(set(cats))
    assert all(coarse_group(f, t) == c for f, t, c in zip(fine, texts, cats))


def test_polyvore_sets_are_outfits(polyvore: Dataset) -> None:
    group = dict(zip(polyvore.items.column("item_id").to_pylist(), polyvore.items.column("category").to_pylist()))
    for ids in polyvore.sets.column("item_ids").to_pylist():
        assert sum(group[i] in WEARABLE_GROUPS for i in ids) >= 3


def test_playlists_distinct_artist_track(playlists: Dataset) -> None:
    keys = set()
    for text, artist, cat in zip(playlists.items.column("text").to_pylist(),
                                 playlists.items.column("artist").to_pylist(),
                                 playlists.items.column("category").to_pylist()):
        a, sep, track = text.partition(" — ")
        assert sep and a == artist and track
        assert cat == primary_artist(artist)
        keys.add((" ".join(a.casefold().split()), " ".join(track.casefold().split())))
    assert len(keys) == playlists.items.num_rows


def test_playlists_set_sizes(playlists: Dataset) -> None:
    sizes = [len(ids) for ids in playlists.sets.column("item_ids").to_pylist()]
    assert min(sizes) >= 5 and max(sizes) <= MAX_SET_SIZE


def test_unknown_builtin_name() -> None:
    with pytest.raises(DataError, match="nope"):
        builtin_dir("nope")


# ------------------------------------------------------------------------------------------ fashion builder

FASHION_ITEMS = [
    RawItem("t1", "white linen shirt", "Tops"),
    RawItem("b1", "slim black jeans", "Jeans"),
    RawItem("s1", "suede ankle boots", "Ankle Booties"),
    RawItem("g1", "leather tote", "Tote Bags"),
    RawItem("d1", "lace midi dress", "Clothing"),
    RawItem("h1", "brass napkin ring", "Napkin Rings"),
    RawItem("h2", "scented candle", "Candles"),
    RawItem("k1", "red lipstick", "Lipstick"),
    RawItem("k2", "", "Eyeshadow"),  # empty name: the text falls back to the fine category
    RawItem("t1", "a duplicate of t1", "Shoes"),  # a repeated id keeps its first record
]
KEEP = RawOutfit("o1", "Weekend  in  Paris", ("t1", "b1", "s1", "g1", "t1", "zz"))
NOISE = RawOutfit("o2", "Untitled #12", ("t1", "b1", "s1", "g1"))
NOISE2 = RawOutfit("o3", "#42", ("t1", "b1", "s1", "g1"))
COLLAGE = RawOutfit("o4", "Cozy Reading Nook", ("t1", "b1", "s1", "g1"), "An art collage from May 2016 by anna")
FEW_WEARABLE = RawOutfit("o5", "Dinner Table", ("h1", "h2", "k1", "t1", "s1"))
DRESS = RawOutfit("o6", "Garden Party", ("d1", "s1", "g1"), "A fashion look from June 2016")


@pytest.fixture(scope="module")
def fashion() -> Dataset:
    return build_fashion_dataset("fash", FASHION_ITEMS, [KEEP, NOISE, NOISE2, COLLAGE, FEW_WEARABLE, DRESS])


def test_fashion_items(fashion: Dataset) -> None:
    rows = {r["item_id"]: r for r in fashion.items.to_pylist()}
    assert list(rows) == ["t1", "b1", "s1", "g1", "d1", "h1", "h2", "k1", "k2"]
    assert rows["t1"]["text"] == "white linen shirt" and rows["t1"]["category"] == "top"
    assert rows["t1"]["fine_category"] == "Tops"
    assert rows["s1"]["category"] == "shoes"
    assert rows["d1"]["category"] == "dress" and rows["d1"]["fine_category"] == "Clothing"
    assert rows["h1"]["category"] == "home"
    assert rows["k1"]["category"] == "beauty"
    assert rows["k2"]["text"] == "Eyeshadow" and rows["k2"]["category"] == "beauty"


def test_fashion_outfit_filters(fashion: Dataset) -> None:
    sets = {r["set_id"]: r for r in fashion.sets.to_pylist()}
    assert set(sets) == {"o1", "o6"}  # noise titles, the collage and the table setting are dropped
    assert sets["o1"]["query"] == "Weekend in Paris"  # whitespace cleaned
    assert sets["o1"]["item_ids"] == ["t1", "b1", "s1", "g1"]  # duplicates and unknown ids dropped
    assert sets["o1"]["split"] in SPLITS
    wscr = {r["set_id"]: r for r in fashion.queries.to_pylist() if r["task"] == "wscr"}
    assert set(wscr) == {"o1", "o6"}
    assert wscr["o1"]["text"] == "Weekend in Paris" and wscr["o1"]["split"] == sets["o1"]["split"]
    assert fashion.queries_for("oar", "train").num_rows > 0


def test_fashion_single_filters() -> None:
    def kept(outfit: RawOutfit) -> bool:
        return build_fashion_dataset("f", FASHION_ITEMS, [outfit]).sets.num_rows == 1

    assert kept(KEEP)
    assert not kept(NOISE)
    assert not kept(RawOutfit("x", "untitled", KEEP.members))
    assert not kept(RawOutfit("x", "   ", KEEP.members))
    assert kept(RawOutfit("x", "Untitled Look", KEEP.members))  # only the bare "Untitled #n" is noise
    assert not kept(COLLAGE)
    assert not kept(RawOutfit("x", "Bathroom", KEEP.members, "A home decor collage by me"))
    assert not kept(RawOutfit("x", "Glam", KEEP.members, "a beauty collage"))
    assert kept(RawOutfit("x", "Bathroom", KEEP.members, "A fashion look featuring an art collage print"))
    assert not kept(FEW_WEARABLE)
    assert not kept(RawOutfit("x", "Two pieces", ("t1", "b1", "h1", "h2", "k1")))  # 2 wearable
    assert kept(RawOutfit("x", "Three pieces", ("t1", "b1", "s1", "h1")))  # 3 wearable


def test_fashion_split_is_by_title() -> None:
    outfits = [RawOutfit(f"o{i}", "Work Wear" if i % 2 else "work   wear!", ("t1", "b1", "s1")) for i in range(10)]
    ds = build_fashion_dataset("f", FASHION_ITEMS, outfits)
    assert ds.sets.num_rows == 10
    assert len(set(ds.sets.column("split").to_pylist())) == 1


@pytest.mark.parametrize("fine, name, group", [
    ("Ankle Booties", "", "shoes"),
    ("Flip Flops", "", "shoes"),
    ("Lipstick", "", "beauty"),
    ("Men's Dress Pants", "", "bottom"),
    ("Dress Shirts", "", "top"),
    ("Day Dresses", "", "dress"),
    ("Clothing", "lace midi dress", "dress"),
    ("Clothing", "black skinny jeans", "bottom"),
    ("Jewelry", "gold hoop earrings", "jewelry"),
    ("Accessories", "leather belt", "accessory"),
    ("Napkin Rings", "", "home"),
    ("Rings", "", "jewelry"),
    ("Bath & Body", "", "beauty"),
    ("Tech Accessories", "", "other"),
    ("Sunglasses", "", "accessory"),
    ("Shoulder Bags", "", "bag"),
    ("Jackets", "", "outerwear"),
    ("Bikinis", "", "swimwear"),
    ("Bras", "", "intimates"),
    ("Candles", "", "home"),
    ("Clothing", "", "other"),
])
def test_coarse_group(fine: str, name: str, group: str) -> None:
    assert coarse_group(fine, name) == group


def test_coarse_group_uses_name_only_for_generic_categories() -> None:
    assert coarse_group("Tops", "lace midi dress") == "top"
    assert coarse_group("clothing", "lace midi dress") == "dress"


# ------------------------------------------------------------------------------------------ music builder


def tracks(artist: str, n: int, start: int = 0) -> tuple[RawTrack, ...]:
    return tuple(RawTrack(artist, f"Song {i}") for i in range(start, start + n))


def test_music_dedup_case_and_space_insensitive() -> None:
    pl = RawPlaylist("p1", "Chill Mix", (RawTrack("Daft Punk", "One More Time"),
                                         RawTrack("daft  punk", "ONE MORE TIME "),
                                         *tracks("Air", 5)))
    pl2 = RawPlaylist("p2", "Other Mix", (RawTrack(" DAFT PUNK", "one more  time"), *tracks("Air", 4, start=2)))
    ds = build_music_dataset("m", [pl, pl2])
    texts = ds.items.column("text").to_pylist()
    assert texts.count("Daft Punk — One More Time") == 1
    assert not [t for t in texts if t.casefold().startswith("daft") and t != "Daft Punk — One More Time"]
    assert ds.items.num_rows == 1 + 6  # Song 0..5 by Air
    sets = {r["query"]: r["item_ids"] for r in ds.sets.to_pylist()}
    assert len(sets["Chill Mix"]) == 6  # the duplicate spelling counts once
    daft = ds.items.column("item_id").to_pylist()[texts.index("Daft Punk — One More Time")]
    assert daft in sets["Chill Mix"] and daft in sets["Other Mix"]  # the same item in both playlists


def test_music_primary_artist() -> None:
    pl = RawPlaylist("p1", "Hip Hop", (RawTrack("Timbaland, Drake", "Say Something"), *tracks("Nas", 5)))
    ds = build_music_dataset("m", [pl])
    row = next(r for r in ds.items.to_pylist() if r["text"] == "Timbaland, Drake — Say Something")
    assert row["category"] == "Timbaland" and row["artist"] == "Timbaland, Drake"
    assert primary_artist("  Jay-Z ,  Kanye West") == "Jay-Z"
    assert primary_artist(", x") == "unknown artist"


def test_music_small_sets_dropped() -> None:
    short = RawPlaylist("p1", "Too Short", tracks("A", 4))
    dup = RawPlaylist("p2", "Dupes", (*tracks("B", 4), RawTrack("b", "song 0"), RawTrack("B", "Song  1")))
    ok = RawPlaylist("p3", "Just Enough", tracks("C", 5))
    ds = build_music_dataset("m", [short, dup, ok])
    assert ds.sets.column("query").to_pylist() == ["Just Enough"]
    assert ds.items.num_rows == 4 + 4 + 5  # the items of dropped playlists stay in the catalog
    wscr = [q for q in ds.queries.to_pylist() if q["task"] == "wscr"]
    assert len(wscr) == 1 and wscr[0]["set_id"] == ds.sets.column("set_id")[0].as_py()


def test_music_description_in_query() -> None:
    ds = build_music_dataset("m", [RawPlaylist("p1", "Road Trip", tracks("A", 5), "songs  for the highway")])
    assert ds.sets.column("query").to_pylist() == ["Road Trip: songs for the highway"]


def test_music_long_playlist_sampled_deterministically() -> None:
    long = RawPlaylist("p1", "Everything", tracks("A", 120))
    a = build_music_dataset("m", [long])
    b = build_music_dataset("m", [long])
    ids_a = a.sets.column("item_ids")[0].as_py()
    assert len(ids_a) == MAX_SET_SIZE == 50
    assert len(set(ids_a)) == 50
    assert set(ids_a) <= set(a.items.column("item_id").to_pylist())
    assert a.items.num_rows == 120  # the catalog keeps every track
    assert ids_a == b.sets.column("item_ids")[0].as_py()
    c = build_music_dataset("m", [long], seed=1)
    assert c.sets.column("item_ids")[0].as_py() != ids_a
    assert a.catalog_hash == c.catalog_hash  # the seed changes samples and splits, not the catalog


# ------------------------------------------------------------------------------------------ validation errors


def save_tables(folder: Path, items: pa.Table | None = None, sets: pa.Table | None = None,
                queries: pa.Table | None = None) -> Path:
    ds = tiny_dataset()
    folder.mkdir(parents=True, exist_ok=True)
    for table, name in ((items if items is not None else ds.items, ITEMS_FILE),
                        (sets if sets is not None else ds.sets, SETS_FILE),
                        (queries if queries is not None else ds.queries, QUERIES_FILE)):
        pq.write_table(table, folder / name)
    return folder


def test_load_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        Dataset.load(tmp_path / "nope")


def test_load_missing_items_file(tmp_path: Path) -> None:
    folder = save_tables(tmp_path / "ds")
    (folder / ITEMS_FILE).unlink()
    with pytest.raises(DataError) as e:
        Dataset.load(folder)
    assert ITEMS_FILE in str(e.value) and "not found" in str(e.value)


def test_read_parquet_not_parquet(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    path.write_bytes(b"definitely not parquet")
    with pytest.raises(DataError) as e:
        read_parquet(path)
    assert str(path) in str(e.value)


def test_missing_column(tmp_path: Path) -> None:
    folder = save_tables(tmp_path / "ds", items=tiny_dataset().items.drop(["category"]))
    with pytest.raises(DataError) as e:
        Dataset.load(folder)
    assert "category" in str(e.value) and ITEMS_FILE in str(e.value) and "missing column" in str(e.value)


def test_wrong_column_type(tmp_path: Path) -> None:
    bad_sets = pa.table({"set_id": ["s0"], "query": ["q"], "item_ids": ["i0"], "split": ["train"]})
    folder = save_tables(tmp_path / "ds", sets=bad_sets)
    with pytest.raises(DataError) as e:
        Dataset.load(folder)
    assert "item_ids" in str(e.value) and SETS_FILE in str(e.value)
    assert "list" in str(e.value)


def test_empty_text(tmp_path: Path) -> None:
    items = tiny_dataset().items.to_pylist()
    items[3]["text"] = "   "
    folder = save_tables(tmp_path / "ds", items=pa.Table.from_pylist(items, schema=CATALOG_SCHEMA))
    with pytest.raises(DataError) as e:
        Dataset.load(folder)
    assert "text" in str(e.value) and "row 3" in str(e.value)


def test_null_text() -> None:
    items = tiny_dataset().items.to_pylist()
    items[1]["text"] = None
    ds = tiny_dataset()
    ds.items = pa.Table.from_pylist(items, schema=pa.schema([pa.field(f.name, f.type) for f in CATALOG_SCHEMA]))
    with pytest.raises(DataError, match="text"):
        ds.validate()


_TABLE_SCHEMAS = {"items": CATALOG_SCHEMA, "sets": SETS_SCHEMA, "queries": QUERIES_SCHEMA}


@pytest.mark.parametrize("table, row, column, value, named", [
    ("items", 5, "item_id", "i2", ["duplicate", "'i2'", "row 5"]),
    ("sets", 1, "item_ids", ["i3", "ghost"], ["ghost"]),
    ("sets", 0, "item_ids", [], ["no items"]),
    ("sets", 0, "split", "dev", ["'dev'", "split"]),
    ("queries", 2, "split", "holdout", ["holdout"]),
    ("queries", 2, "task", "rank", ["rank"]),
    ("queries", 0, "set_id", "s404", ["s404"]),
])
def test_bad_row_is_named(table: str, row: int, column: str, value: object, named: list[str]) -> None:
    """One bad value in one row of a table → DataError naming the problem."""
    ds = tiny_dataset()
    rows = getattr(ds, table).to_pylist()
    rows[row][column] = value
    setattr(ds, table, pa.Table.from_pylist(rows, schema=_TABLE_SCHEMAS[table]))
    with pytest.raises(DataError) as e:
        ds.validate()
    assert all(part in str(e.value) for part in named), str(e.value)


def test_empty_catalog() -> None:
    ds = tiny_dataset()
    ds.items = CATALOG_SCHEMA.empty_table()
    ds.sets, ds.queries = SETS_SCHEMA.empty_table(), QUERIES_SCHEMA.empty_table()
    with pytest.raises(DataError, match="no items"):
        ds.validate()


def test_unknown_builtin_in_load_dataset() -> None:
    spec = DatasetSpec("polyvore")
    spec.name = "nope"  # bypass the config check, as a caller constructing specs by hand could
    with pytest.raises(DataError, match="nope"):
        load_dataset(spec)


# ------------------------------------------------------------------------------------------ save / load


def test_save_load_roundtrip(tmp_path: Path) -> None:
    ds = tiny_dataset()
    out = ds.save(tmp_path / "ds")
    assert files_in(out) == {ITEMS_FILE, SETS_FILE, QUERIES_FILE, INFO_FILE}
    back = Dataset.load(out)
    assert back.name == "tiny"
    assert back.items.equals(ds.items)
    assert back.sets.equals(ds.sets)
    assert back.queries.equals(ds.queries)
    assert back.catalog_hash == ds.catalog_hash
    info = read_json(out / INFO_FILE)
    files = info.pop("files")
    assert info == {"name": "tiny", "catalog_hash": ds.catalog_hash, "items": 12, "sets": 2, "queries": 3}
    assert files == {f: sha256_file(out / f) for f in (ITEMS_FILE, SETS_FILE, QUERIES_FILE)}


def test_roundtrip_keeps_attribute_columns(tmp_path: Path) -> None:
    ds = build_music_dataset("m", [RawPlaylist("p1", "Road Trip", tracks("A, B", 6))])
    back = Dataset.load(ds.save(tmp_path / "m"))
    assert back.items.equals(ds.items)
    assert "artist" in back.items.column_names
    assert back.sets.equals(ds.sets) and back.queries.equals(ds.queries)


def test_load_without_optional_files(tmp_path: Path) -> None:
    folder = tmp_path / "only_items"
    folder.mkdir()
    pq.write_table(tiny_dataset().items, folder / ITEMS_FILE)
    ds = Dataset.load(folder)
    assert ds.name == "only_items"
    assert ds.items.num_rows == 12 and ds.sets.num_rows == 0 and ds.queries.num_rows == 0


def test_save_refuses_invalid_dataset(tmp_path: Path) -> None:
    ds = tiny_dataset()
    sets = ds.sets.to_pylist()
    sets[0]["item_ids"] = ["ghost"]
    ds.sets = pa.Table.from_pylist(sets, schema=SETS_SCHEMA)
    with pytest.raises(DataError, match="ghost"):
        ds.save(tmp_path / "ds")
    assert not (tmp_path / "ds").exists() or not any((tmp_path / "ds").iterdir())


def crash_after_partial_write(monkeypatch: pytest.MonkeyPatch, fail_on: str | None = None) -> list[str]:
    """Make pq.write_table write half of the file and then raise (only for the file named `fail_on`)."""
    real = pq.write_table
    written: list[str] = []

    def partial(table, where, *args, **kwargs):
        real(table, where, *args, **kwargs)
        written.append(str(where))
        if fail_on is None or len(written) == ["items", "sets", "queries"].index(fail_on) + 1:
            size = os.path.getsize(where)
            with open(where, "r+b") as f:
                f.truncate(size // 2)
            raise OSError("simulated crash: disk full")

    monkeypatch.setattr(pq, "write_table", partial)
    return written


def test_atomic_path_crash_keeps_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "artifact.bin"
    path.write_bytes(b"old contents")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            assert tmp.parent == path.parent and tmp != path
            tmp.write_bytes(b"new con")
            raise RuntimeError("killed")
    assert path.read_bytes() == b"old contents"
    assert files_in(tmp_path) == {"artifact.bin"}


def test_atomic_path_success_replaces(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "artifact.bin"
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"whole")
        assert not path.exists()  # nothing visible under the final name until the block finishes
    assert path.read_bytes() == b"whole"
    assert files_in(path.parent) == {"artifact.bin"}
    # Readable like any file this process creates (mkstemp alone would leave it 0600).
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_parquet_crash_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / ITEMS_FILE
    write_parquet(tiny_dataset().items, path)
    before = path.read_bytes()
    crash_after_partial_write(monkeypatch)
    with pytest.raises(OSError, match="simulated crash"):
        write_parquet(tiny_dataset(n_items=30).items, path)
    assert path.read_bytes() == before
    assert files_in(tmp_path) == {ITEMS_FILE}
    assert read_parquet(path).equals(tiny_dataset().items)


def test_dataset_save_crash_leaves_previous_files_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tiny_dataset().save(tmp_path / "ds")
    before = {name: (folder / name).read_bytes() for name in files_in(folder)}
    crash_after_partial_write(monkeypatch, fail_on="items")
    with pytest.raises(OSError, match="simulated crash"):
        tiny_dataset(n_items=20, text_prefix="new").save(folder)
    assert {name: (folder / name).read_bytes() for name in files_in(folder)} == before
    assert not leftover_temp_files(folder)
    monkeypatch.undo()
    assert Dataset.load(folder).items.equals(tiny_dataset().items)


def test_dataset_save_crash_into_new_folder_leaves_no_complete_marker(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "fresh"
    crash_after_partial_write(monkeypatch, fail_on="sets")
    with pytest.raises(OSError):
        tiny_dataset().save(folder)
    assert not (folder / INFO_FILE).exists()  # the folder is not marked complete
    assert not (folder / SETS_FILE).exists()  # no partial file under a final name
    assert not leftover_temp_files(folder)


def test_dataset_save_crash_midway_is_not_read_as_a_mix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save that dies after replacing items.parquet but before the rest must not leave a folder that loads as
    a silent mix of the new catalog and the old sets/queries/dataset.json."""
    old = tiny_dataset()
    folder = old.save(tmp_path / "ds")
    new = tiny_dataset(text_prefix="changed")  # same ids, different texts: the old sets still validate
    crash_after_partial_write(monkeypatch, fail_on="sets")
    with pytest.raises(OSError):
        new.save(folder)
    monkeypatch.undo()
    assert not leftover_temp_files(folder)
    try:
        loaded = Dataset.load(folder)
    except DataError:
        return  # refusing an inconsistent folder is fine
    # Otherwise it must be one whole dataset, consistent with its dataset.json marker.
    info = read_json(folder / INFO_FILE) if (folder / INFO_FILE).is_file() else None
    assert info is None or info["catalog_hash"] == loaded.catalog_hash, \
        "dataset.json marks the folder complete but describes a different catalog than items.parquet"


def test_own_catalog_with_sets_and_no_queries_gets_them_from_the_sets(tmp_path: Path) -> None:
    folder = save_tables(tmp_path / "ds")
    (folder / QUERIES_FILE).unlink()
    ds = Dataset.load(folder)
    sets = tiny_dataset().sets
    assert ds.queries.num_rows == 2 * sets.num_rows
    for task in ("oar", "wscr"):
        for split in ("train", "test"):
            expected = [q for q, s in zip(sets.column("query").to_pylist(), sets.column("split").to_pylist())
                        if s == split]
            assert ds.queries_for(task, split).column("text").to_pylist() == expected
    wscr = ds.queries_for("wscr", "train")
    assert all(ds.reference_sets()[s] for s in wscr.column("set_id").to_pylist())


def test_own_catalog_with_items_only_loads_with_no_queries(tmp_path: Path) -> None:
    folder = save_tables(tmp_path / "ds")
    (folder / QUERIES_FILE).unlink()
    (folder / SETS_FILE).unlink()
    ds = Dataset.load(folder)
    assert ds.sets.num_rows == ds.queries.num_rows == 0 and ds.items.num_rows == tiny_dataset().items.num_rows
