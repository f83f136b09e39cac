"""Music catalogs from playlists.

Decisions (documented in docs/stages.md (Data)):
- catalog = the distinct (artist, track) pairs over all playlists, matched case- and space-insensitively;
  item text "Artist — Track"; `category` = the primary (first-listed) artist, `artist` = the full credit;
- a playlist becomes a reference set if it has at least MIN_SET_SIZE distinct tracks; playlists longer than
  MAX_SET_SIZE contribute a seeded sample of MAX_SET_SIZE tracks (the very long ones run to ~13k tracks);
- WSCR query = the title, followed by the description when it has one (descriptions name artists and moods);
- playlists are split train/val/test 80/10/10 by a stable hash of the normalized title.
"""

from __future__ import annotations

import random
from typing import Iterable

import pyarrow as pa

from r4t.data.build import assemble, clean_text, normalize_title, oar_query_rows, short_hash, stable_split
from r4t.data.dataset import Dataset
from r4t.data.raw import RawPlaylist, RawTrack

MIN_SET_SIZE = 5
MAX_SET_SIZE = 50
MAX_DESCRIPTION_CHARS = 200


def track_key(track: RawTrack) -> str:
    return f"{clean_text(track.artist).casefold()}\x00{clean_text(track.track).casefold()}"


def primary_artist(artist: str) -> str:
    return clean_text(artist.split(",")[0]) or "unknown artist"


def build_music_dataset(name: str, playlists: Iterable[RawPlaylist], seed: int = 0,
                        min_set_size: int = MIN_SET_SIZE, max_set_size: int = MAX_SET_SIZE) -> Dataset:
    """`seed` picks the samples of long playlists and salts the split hash; 0 reproduces the shipped data."""
    item_rows, id_of = [], {}
    set_rows, query_rows = [], []
    for playlist in playlists:
        ids = []
        for track in playlist.members:
            artist, title = clean_text(track.artist), clean_text(track.track)
            if not artist or not title:
                continue
            key = track_key(track)
            if key not in id_of:
                id_of[key] = f"t{short_hash(key, 16)}"
                item_rows.append({"item_id": id_of[key], "text": f"{artist} — {title}",
                                  "category": primary_artist(artist), "artist": artist})
            ids.append(id_of[key])
        ids = list(dict.fromkeys(ids))
        title = clean_text(playlist.title)
        if len(ids) < min_set_size or sum(ch.isalnum() for ch in title) < 2:
            continue
        if len(ids) > max_set_size:
            ids = random.Random(f"{seed}:{playlist.set_id}").sample(ids, max_set_size)
        description = clean_text(playlist.description)[:MAX_DESCRIPTION_CHARS]
        query = f"{title}: {description}" if description else title
        split = stable_split(normalize_title(title), salt=str(seed) if seed else "")
        set_id = f"p{short_hash(playlist.set_id)}"
        set_rows.append({"set_id": set_id, "query": query, "item_ids": ids, "split": split})
        query_rows.append({"query_id": f"wscr-{set_id}", "text": query, "split": split, "task": "wscr",
                           "set_id": set_id})
    return assemble(name, item_rows, {"artist": pa.string()}, set_rows, query_rows + oar_query_rows("music"))
