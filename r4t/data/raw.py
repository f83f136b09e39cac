"""Source records as the public formats give them, before r4t derives a Dataset from them.

Every loader of a public format (r4t.data.formats) produces these; the dataset builders
(r4t.data.fashion, r4t.data.music) turn them into a validated Dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

M = TypeVar("M")


@dataclass(frozen=True)
class RawItem:
    """A fashion item: `category` is the source's fine-grained category name (e.g. "Ankle Booties")."""
    item_id: str
    name: str
    category: str


@dataclass(frozen=True)
class RawTrack:
    artist: str
    track: str


@dataclass(frozen=True)
class RawSet(Generic[M]):
    """A set as its source titles it: an outfit's item ids or a playlist's tracks, in the source's order."""
    set_id: str
    title: str
    members: tuple[M, ...]
    description: str = ""


RawOutfit = RawSet[str]  # members: the ids of RawItems
RawPlaylist = RawSet[RawTrack]
