"""Strict parsing of a fan-out completion into exactly k sub-queries.

Format: one sub-query per line. A leading list marker ("1.", "2)", "-", "*", "•") is tolerated and removed;
anything else that breaks the format (wrong count, an empty line, a repeated line) makes the completion
malformed. A malformed completion is never an exception: it gets the reward config's `malformed_penalty`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LIST_MARKER = re.compile(r"^(?:\d{1,2}[.)]|[-*•])(?:\s+|$)")


@dataclass(frozen=True)
class ParsedFanout:
    subqueries: tuple[str, ...]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _norm(line: str) -> str:
    return " ".join(line.casefold().split())


def parse_fanout(completion: str | list[str], k: int) -> ParsedFanout:
    """completion: the LM's text (or its lines) → k clean sub-queries, or an error naming the defect."""
    lines = completion.strip().split("\n") if isinstance(completion, str) else list(completion)
    cleaned = tuple(_LIST_MARKER.sub("", line.strip()).strip() for line in lines)
    if len(cleaned) != k:
        return ParsedFanout(cleaned, f"expected {k} lines, got {len(cleaned)}")
    seen: dict[str, int] = {}
    for i, line in enumerate(cleaned):
        if not line:
            return ParsedFanout(cleaned, f"line {i + 1} is empty")
        if _norm(line) in seen:
            return ParsedFanout(cleaned, f"line {i + 1} repeats line {seen[_norm(line)] + 1}")
        seen[_norm(line)] = i
    return ParsedFanout(cleaned)


def usable_subqueries(completion: str, k: int) -> list[str]:
    """What a retrieval system can still use from any completion: its non-empty, distinct lines (markers
    removed), at most k. Retrieval uses this; the reward keeps the strict parser, so training still penalizes
    a malformed fan-out."""
    out, seen = [], set()
    for line in completion.strip().split("\n"):
        line = _LIST_MARKER.sub("", line.strip()).strip()
        if line and _norm(line) not in seen:
            seen.add(_norm(line))
            out.append(line)
    return out[:k]
