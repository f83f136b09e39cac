"""Production-music libraries in the built-in playlists catalog: labels that publish stock and trailer music
under generic titles ("SATV Music — My Heart", "Extreme Music — Dreams"). Such titles sit close to many
queries in the training encoder's space, and an RL policy learned to return them, so the report gives, per
method, the share of returned tracks whose primary artist is one of these labels. The list is the labels of
this kind found in the catalog by reading its artist names.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

LIBRARIES = frozenset({"SATV Music", "Extreme Music", "Solu Music", "Vanacore Music", "Icon Music",
                       "Cavendish Music", "BMG Production Music UK", "Bigger Story Music", "Immediate Music",
                       "Future World Music", "Pink Shark Music"})


def library_rows(categories: Sequence[str]) -> np.ndarray | None:
    """Per catalog row, whether its primary artist (the `category` column) is a production-music library;
    None for a catalog with none (fashion), where the share is not reported."""
    mask = np.array([c in LIBRARIES for c in categories], bool)
    return mask if mask.any() else None


def library_share(item_rows: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """item_rows: [B, K] catalog rows → [B] share of them from a production-music library."""
    return mask[item_rows].mean(axis=1)
