"""Readers of the public data formats: each test writes a small fixture in the exact format and reads it back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from r4t.data.formats import (
    SOURCE_FORMATS, load_source, read_fashion_jsonl, read_maryland_polyvore, read_mpd_slices, read_playlists_jsonl,
    read_polyvore_outfits,
)
from r4t.data.raw import RawItem, RawOutfit, RawPlaylist, RawTrack
from r4t.errors import DataError


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def maryland_item(index: int, name: str, categoryid: int) -> dict:
    return {"index": index, "name": name, "price": 20.5, "likes": 3, "image": f"http://img/{index}.jpg",
            "categoryid": categoryid}


MARYLAND_TRAIN = [
    {"name": "Summer day", "set_id": "100", "desc": "light and easy", "views": 10, "likes": 2,
     "items": [maryland_item(1, "white tee", 11), maryland_item(2, "denim shorts", 27)]},
    {"name": "Night out", "set_id": "200", "views": 5, "likes": 0,
     "items": [maryland_item(1, "black dress", 3), maryland_item(3, "heels", 99)]},
]
MARYLAND_VALID = [
    MARYLAND_TRAIN[0],  # the same outfit again: its items and the outfit are kept once
    {"name": "Office", "set_id": "300", "desc": "", "views": 1, "likes": 1, "items": [maryland_item(1, "blazer", 11)]},
]


@pytest.fixture
def maryland(tmp_path: Path) -> Path:
    write_json(tmp_path / "train_no_dup.json", MARYLAND_TRAIN)
    write_json(tmp_path / "valid_no_dup.json", MARYLAND_VALID)
    (tmp_path / "category_id.txt").write_text("3 Day Dresses\n11 Tops\n\n27 Shorts\n", encoding="utf-8")
    return tmp_path


def test_maryland_folder(maryland: Path) -> None:
    items, outfits = read_maryland_polyvore(maryland)
    assert items == [RawItem("100_1", "white tee", "Tops"), RawItem("100_2", "denim shorts", "Shorts"),
                     RawItem("200_1", "black dress", "Day Dresses"), RawItem("200_3", "heels", "99"),
                     RawItem("300_1", "blazer", "Tops")]
    assert outfits == [RawOutfit("100", "Summer day", ("100_1", "100_2"), "light and easy"),
                       RawOutfit("200", "Night out", ("200_1", "200_3")),
                       RawOutfit("300", "Office", ("300_1",))]


def test_maryland_single_file(maryland: Path) -> None:
    items, outfits = read_maryland_polyvore(maryland / "valid_no_dup.json")
    assert [i.item_id for i in items] == ["100_1", "100_2", "300_1"]
    assert [o.set_id for o in outfits] == ["100", "300"]


def test_maryland_without_category_names(tmp_path: Path) -> None:
    items, _ = read_maryland_polyvore(write_json(tmp_path / "test_no_dup.json", MARYLAND_TRAIN[1:]))
    assert [i.category for i in items] == ["3", "99"]


@pytest.fixture
def polyvore_outfits(tmp_path: Path) -> Path:
    write_json(tmp_path / "polyvore_item_metadata.json", {
        "i1": {"url_name": "striped tee", "description": "", "categories": [], "title": "Striped T-Shirt",
               "related": [], "category_id": "11", "semantic_category": "tops"},
        "i2": {"url_name": "blue jeans", "description": "", "categories": [], "title": "", "related": [],
               "category_id": "27", "semantic_category": "bottoms"},
        "i3": {"url_name": "ankle boots", "title": "Ankle Boots", "category_id": 4495},
        "i4": {"url_name": "unused", "title": "Unused", "category_id": "1", "semantic_category": "bags"},
    })
    write_json(tmp_path / "polyvore_outfit_titles.json", {
        "s1": {"url_name": "casual friday", "title": "Casual Friday"},
        "s2": {"url_name": "weekend look", "title": ""},
    })
    write_json(tmp_path / "nondisjoint" / "train.json", [
        {"set_id": "s1", "items": [{"item_id": "i1", "index": 1}, {"item_id": "i2", "index": 2}]},
        {"set_id": "s2", "items": [{"item_id": "i2", "index": 1}, {"item_id": "i3", "index": 2}]},
    ])
    write_json(tmp_path / "nondisjoint" / "test.json", [{"set_id": "s3", "items": [{"item_id": "i3", "index": 1}]}])
    return tmp_path


def test_polyvore_outfits(polyvore_outfits: Path) -> None:
    items, outfits = read_polyvore_outfits(polyvore_outfits, splits=("train", "test"), variant="nondisjoint")
    assert items == [RawItem("i1", "Striped T-Shirt", "tops"), RawItem("i2", "blue jeans", "bottoms"),
                     RawItem("i3", "Ankle Boots", "4495")]
    assert outfits == [RawOutfit("s1", "Casual Friday", ("i1", "i2")), RawOutfit("s2", "weekend look", ("i2", "i3")),
                       RawOutfit("s3", "", ("i3",))]


def test_polyvore_outfits_finds_the_variant_folder(polyvore_outfits: Path) -> None:
    # The public download keeps split files only in nondisjoint/ and disjoint/; variant=None finds them.
    assert (read_polyvore_outfits(polyvore_outfits, splits=("train", "test"))
            == read_polyvore_outfits(polyvore_outfits, splits=("train", "test"), variant="nondisjoint"))


def test_polyvore_outfits_errors(polyvore_outfits: Path) -> None:
    with pytest.raises(DataError, match=r"nondisjoint/valid\.json: file not found"):
        read_polyvore_outfits(polyvore_outfits)  # the auto-detected variant lacks valid.json
    with pytest.raises(DataError, match="variant 'both'"):
        read_polyvore_outfits(polyvore_outfits, variant="both")
    write_json(polyvore_outfits / "disjoint" / "train.json", [{"set_id": "s9", "items": [{"item_id": "i9"}]}])
    with pytest.raises(DataError, match=r"train\.json: outfits\[0\]\.items\[0\]: item_id 'i9' not found"):
        read_polyvore_outfits(polyvore_outfits, splits=("train",), variant="disjoint")


def mpd_playlist(pid: int, name: str, tracks: list[tuple[int, str, str]], **extra: Any) -> dict:
    return {"name": name, "collaborative": "false", "pid": pid, "num_tracks": len(tracks), **extra,
            "tracks": [{"pos": pos, "artist_name": artist, "track_name": track, "album_name": "Album",
                        "track_uri": f"spotify:track:{pid}-{pos}", "duration_ms": 1}
                       for pos, artist, track in tracks]}


@pytest.fixture
def mpd(tmp_path: Path) -> Path:
    info = {"generated_on": "2017-12-03", "slice": "", "version": "v1"}
    write_json(tmp_path / "mpd.slice.1000-1999.json", {"info": info, "playlists": [
        mpd_playlist(1000, "Road trip", [(1, "Beyoncé", "Halo"), (0, "Queen", "Bohemian Rhapsody")])]})
    write_json(tmp_path / "mpd.slice.0-999.json", {"info": info, "playlists": [
        mpd_playlist(7, "chill", [(0, "Bon Iver", "Holocene")], description="late night")]})
    (tmp_path / "README.md").write_text("not a slice")
    return tmp_path


def test_mpd_folder(mpd: Path) -> None:
    assert read_mpd_slices(mpd) == [
        RawPlaylist("7", "chill", (RawTrack("Bon Iver", "Holocene"),), "late night"),
        RawPlaylist("1000", "Road trip", (RawTrack("Queen", "Bohemian Rhapsody"), RawTrack("Beyoncé", "Halo"))),
    ]


def test_mpd_single_file(mpd: Path) -> None:
    assert [p.set_id for p in read_mpd_slices(mpd / "mpd.slice.1000-1999.json")] == ["1000"]


def test_mpd_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no file matching 'mpd\.slice\.\*\.json'"):
        read_mpd_slices(tmp_path)


@pytest.fixture
def fashion_jsonl(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "items.jsonl", [
        {"item_id": "a", "name": "Linen shirt", "category": "Tops", "category_id": 11, "price": 30.0, "likes": 2},
        {"item_id": "b", "name": "Chinos", "category": "", "category_id": 27, "price": None, "likes": None},
        {"item_id": "c", "name": "Loafers", "category": "Shoes"},
        {"item_id": "a", "name": "Linen shirt (again)", "category": "Tops"},
    ])
    write_jsonl(tmp_path / "outfits.jsonl", [
        {"set_id": "o1", "name": "Smart casual", "desc": "for work", "likes": 4, "views": 9,
         "item_ids": ["a", "b", "c"]},
        {"set_id": "o2", "name": "Weekend", "item_ids": ["b", "c", "b"]},
    ])
    return tmp_path


def test_fashion_jsonl(fashion_jsonl: Path) -> None:
    items, outfits = read_fashion_jsonl(fashion_jsonl)
    assert items == [RawItem("a", "Linen shirt", "Tops"), RawItem("b", "Chinos", "27"),
                     RawItem("c", "Loafers", "Shoes")]
    assert outfits == [RawOutfit("o1", "Smart casual", ("a", "b", "c"), "for work"),
                       RawOutfit("o2", "Weekend", ("b", "c"))]


@pytest.fixture
def playlists_jsonl(tmp_path: Path) -> Path:
    path = write_jsonl(tmp_path / "playlists.jsonl", [
        {"path": "p/rock", "group": "g1", "title": "Rock classics", "description": "loud",
         "tracks": [{"artist": "AC/DC", "track": "Thunderstruck"}, {"artist": "Queen", "track": "We Will Rock You"}]},
        {"group": "g2", "title": "Jazz evening", "tracks": [{"artist": "Miles Davis", "track": "So What"}]},
    ])
    path.write_text(path.read_text() + "\n")  # a trailing blank line is ignored
    return path


def test_playlists_jsonl(playlists_jsonl: Path) -> None:
    expected = [
        RawPlaylist("p/rock", "Rock classics",
                    (RawTrack("AC/DC", "Thunderstruck"), RawTrack("Queen", "We Will Rock You")), "loud"),
        RawPlaylist("Jazz evening", "Jazz evening", (RawTrack("Miles Davis", "So What"),)),
    ]
    assert read_playlists_jsonl(playlists_jsonl) == expected
    assert read_playlists_jsonl(playlists_jsonl.parent) == expected


@pytest.mark.parametrize("fmt", list(SOURCE_FORMATS))
def test_missing_file(tmp_path: Path, fmt: str) -> None:
    missing = tmp_path / "nowhere" / "data.json"
    with pytest.raises(DataError, match="not found") as e:
        SOURCE_FORMATS[fmt][1](missing)
    assert "nowhere" in str(e.value)


def test_invalid_json(tmp_path: Path) -> None:
    (tmp_path / "train_no_dup.json").write_text('[{"set_id": "1",')
    with pytest.raises(DataError, match=r"train_no_dup\.json: not valid JSON"):
        read_maryland_polyvore(tmp_path)
    (tmp_path / "playlists.jsonl").write_text('{"title": "ok", "tracks": []}\n{"title": \n')
    with pytest.raises(DataError, match=r"playlists\.jsonl: line 2: not valid JSON"):
        read_playlists_jsonl(tmp_path)


@pytest.mark.parametrize("mutate, message", [
    (lambda o: o[1]["items"][1].pop("categoryid"), r"outfits\[1\]\.items\[1\]: missing required key 'categoryid'"),
    (lambda o: o[0].pop("set_id"), r"outfits\[0\]: missing required key 'set_id'"),
    (lambda o: o[0]["items"][0].update(index="1"), r"outfits\[0\]\.items\[0\]: key 'index' must be int, got str '1'"),
    (lambda o: o[0].update(items={}), r"outfits\[0\]: key 'items' must be list, got dict"),
])
def test_maryland_bad_records(tmp_path: Path, mutate: Any, message: str) -> None:
    outfits = json.loads(json.dumps(MARYLAND_TRAIN))
    mutate(outfits)
    write_json(tmp_path / "train_no_dup.json", outfits)
    with pytest.raises(DataError, match=r"train_no_dup\.json: " + message):
        read_maryland_polyvore(tmp_path)


def test_mpd_missing_key(mpd: Path) -> None:
    write_json(mpd / "mpd.slice.0-999.json", {"info": {}, "playlists": [{"name": "x", "tracks": []}]})
    with pytest.raises(DataError, match=r"mpd\.slice\.0-999\.json: playlists\[0\]: missing required key 'pid'"):
        read_mpd_slices(mpd)


def test_jsonl_missing_key(fashion_jsonl: Path) -> None:
    write_jsonl(fashion_jsonl / "outfits.jsonl", [{"set_id": "o1", "name": "x", "item_ids": ["a"]},
                                                  {"set_id": "o2", "item_ids": []}])
    with pytest.raises(DataError, match=r"outfits\.jsonl: line 2: missing required key 'name'"):
        read_fashion_jsonl(fashion_jsonl)
    write_jsonl(fashion_jsonl / "items.jsonl", [{"item_id": "a", "name": "x"}])
    with pytest.raises(DataError, match=r"items\.jsonl: line 1: missing required key 'category' \(or 'category_id'\)"):
        read_fashion_jsonl(fashion_jsonl)


def test_load_source_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown source format 'csv'; known formats: maryland, polyvore_outfits, mpd"):
        load_source("csv", str(tmp_path))


def test_load_source_fashion(tmp_path: Path) -> None:
    write_json(tmp_path / "train_no_dup.json", [
        {"name": "Beach day", "set_id": "5", "views": 1, "likes": 1, "items": [
            maryland_item(1, "striped tee", 11), maryland_item(2, "denim shorts", 27),
            maryland_item(3, "flip flops", 40)]},
    ])
    (tmp_path / "category_id.txt").write_text("11 Tops\n27 Shorts\n40 Sandals\n", encoding="utf-8")
    ds = load_source("maryland", str(tmp_path), name="tiny", seed=1)
    assert ds.name == "tiny"
    assert ds.items.column("item_id").to_pylist() == ["5_1", "5_2", "5_3"]
    assert ds.reference_sets() == {"5": ["5_1", "5_2", "5_3"]}


def test_load_source_music(tmp_path: Path) -> None:
    tracks = [(pos, f"Artist {pos}", f"Song {pos}") for pos in range(6)]
    write_json(tmp_path / "mpd.slice.0-999.json", {"info": {}, "playlists": [mpd_playlist(3, "Gym mix", tracks)]})
    ds = load_source("mpd", str(tmp_path / "mpd.slice.0-999.json"))
    assert ds.name == "mpd.slice.0-999"
    assert ds.items.column("text").to_pylist() == [f"Artist {pos} — Song {pos}" for pos in range(6)]
    assert ds.sets.column("query").to_pylist() == ["Gym mix"]
