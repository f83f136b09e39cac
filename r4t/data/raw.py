"""Source records as the public formats give them, before r4t derives a Dataset from them.

Every loader of a public format (r4t.data.formats) produces these; the dataset builders
(r4t.data.fashion, r4t.data.music) turn them into a validated Dataset.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RawItem:
    """A fashion item: `category` is the source's fine-grained category name (e.g. "Ankle Booties")."""
    item_id: str
    name: str
    category: str


@dataclass(frozen=True)
class RawOutfit:
    set_id: str
    title: str
    item_ids: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True)
class RawTrack:
    artist: str
    track: str


@dataclass(frozen=True)
class RawPlaylist:
    playlist_id: str
    title: str
    tracks: tuple[RawTrack, ...]
    description: str = ""
