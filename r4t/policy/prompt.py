"""Prompt format of the fan-out LM: a query in, exactly k sub-queries out, one per line, then end-of-sequence.

The completion is parsed by `r4t.rewards.parse.parse_fanout`, the same strict parser the reward uses.
"""

from __future__ import annotations

from typing import Sequence

PLAIN_TEMPLATE = "query: {query}\nsub-queries:\n"


def clean_line(text: str) -> str:
    """One sub-query per line: collapse whitespace so a line break inside a text cannot split it in two."""
    return " ".join(text.split())


def build_prompt(query: str, template: str = PLAIN_TEMPLATE, k: int = 10, context: Sequence[str] = ()) -> str:
    """template: a str.format pattern with {query} and optionally {k} and {context} (the `context` lines: the
    numbered catalog items near the query, see r4t.policy.context)."""
    return template.format(query=clean_line(query), k=k, context="\n".join(clean_line(c) for c in context))


def format_fanout(subqueries: Sequence[str]) -> str:
    """The completion text for a list of sub-queries (without the end-of-sequence token). Lines are numbered
    ("1. ...", the parser strips the marker) so that a small LM can count to k and stop."""
    return "\n".join(f"{i}. {clean_line(s)}" for i, s in enumerate(subqueries, 1))
