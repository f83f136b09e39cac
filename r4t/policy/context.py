"""Retrieval-augmented prompts: the catalog items nearest the query (by the pretrained text encoder) are listed,
numbered, in the fan-out LM's prompt, and a sub-query may name one by its number ("[3]") instead of spelling
it out. The policy then chooses among and recombines items the encoder found relevant instead of inventing
sub-queries from words it may never have seen: the knowledge a 4B instruction model would bring has to come
from the pretrained encoder here. A line may also be free text or mix both ("[3] in red"); references are
replaced by the listed item's text before anything reads the fan-out (`resolve`), so the reward, the grounding
and synthesis see ordinary sub-query texts. The same prompt works unchanged for a real instruction model.

    prompts, listed = fanout_prompts(queries, query_emb, template, k, prompt_context(cat, policy_cfg))
    texts = [resolve(completion, listed[i]) for i, completion in ...]
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from r4t.catalog import PreparedCatalog
from r4t.config import PolicyConfig
from r4t.grounding import text_groups
from r4t.index import ItemIndex
from r4t.policy.prompt import build_prompt, clean_line

_REFERENCE = re.compile(r"\[(\d{1,3})\]")


class PromptContext:
    """For each query, the texts of `size` catalog items near it: distinct texts, nearest first, at most
    `per_category` of a category (0: no cap) among the nearest 16·size items, then, when the categories run out,
    the nearest of the rest. A list of ten near-identical dresses would leave the policy nothing to choose; the
    list's order is the order of preference (capped items first), which the warm start imitates."""

    def __init__(self, index: ItemIndex, texts: Sequence[str], size: int, category_codes: np.ndarray | None = None,
                 per_category: int = 0):
        self.index, self.texts, self.size = index, texts, size
        self.codes, self.per_category = category_codes, per_category
        self.groups = index.dup_group if index.dup_group is not None else text_groups(texts)  # one per text_key

    def rows(self, query_emb: np.ndarray) -> list[list[int]]:
        """query_emb: [B, d] → B lists of at most `size` catalog rows, in prompt order."""
        depth = min(16 * self.size, len(self.texts))
        return [self._pick(found[found >= 0]) for found in self.index.search(query_emb, depth)[1]]

    def _pick(self, found: np.ndarray) -> list[int]:
        """One query's nearest rows → its listed rows: capped per category first, then filled by nearness."""
        _, first = np.unique(self.groups[found], return_index=True)
        candidates = found[np.sort(first)]  # the nearest item of each distinct text, nearest first
        if not self.per_category or self.codes is None:
            return candidates[:self.size].tolist()
        codes = self.codes[candidates]
        order = np.argsort(codes, kind="stable")  # by category, nearness kept within one
        sorted_codes = codes[order]
        starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
        place = np.empty(len(codes), np.int64)  # each candidate's place among the nearer ones of its category
        place[order] = np.arange(len(codes)) - np.repeat(starts, np.diff(np.r_[starts, len(codes)]))
        capped = candidates[place < self.per_category][:self.size]
        rest = candidates[~np.isin(candidates, capped)][:self.size - len(capped)]
        return np.concatenate([capped, rest]).tolist()

    def padded_rows(self, query_emb: np.ndarray) -> np.ndarray:
        """query_emb: [B, d] → [B, size] int64 catalog rows in prompt order, -1 past the rows found (a catalog
        with fewer distinct texts than `size`)."""
        out = np.full((len(query_emb), self.size), -1, np.int64)
        for b, rows in enumerate(self.rows(query_emb)):
            out[b, :len(rows)] = rows
        return out

    def lines(self, query_emb: np.ndarray) -> list[list[str]]:
        """query_emb: [B, d] → B lists of the listed item texts, in prompt order ([1] first)."""
        return [[clean_line(self.texts[r]) for r in rows] for rows in self.rows(query_emb)]


def catalog_context(cat: PreparedCatalog, items: int, per_category: int) -> PromptContext | None:
    """The `items` catalog items near each query, at most `per_category` per category first (None for 0 items)."""
    return PromptContext(cat.index, cat.texts, items, cat.category_codes, per_category) if items else None


def prompt_context(cat: PreparedCatalog, policy: PolicyConfig) -> PromptContext | None:
    """The context a policy configured with `policy.context_items` is prompted with (None for 0)."""
    return catalog_context(cat, policy.context_items, policy.context_per_category)


def context_embeddings(rows: np.ndarray, item_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Padded context rows [B, C] (-1: none) → (their embeddings [B, C, d], zero where padded; valid [B, C])."""
    valid = rows >= 0
    return item_emb[np.where(valid, rows, 0)] * valid[..., None], valid


def numbered(listed: Sequence[str]) -> list[str]:
    """The prompt's context lines: "[1] text", "[2] text", ..."""
    return [f"[{i}] {text}" for i, text in enumerate(listed, 1)]


def fanout_prompts(queries: Sequence[str], query_emb: np.ndarray, template: str, k: int,
                   context: PromptContext | None = None) -> tuple[list[str], list[list[str]]]:
    """The fan-out LM's prompt per query, and the item texts it lists (empty lists without a context)."""
    if context is None:
        return [build_prompt(q, template, k) for q in queries], [[] for _ in queries]
    listed = context.lines(query_emb)
    return [build_prompt(q, template, k, numbered(lines)) for q, lines in zip(queries, listed)], listed


def resolve(completion: str, listed: Sequence[str]) -> str:
    """Replace each reference "[n]" to a listed item (1 ≤ n ≤ len(listed)) by that item's text; anything else,
    an out-of-range reference included, stays as written."""
    if not listed:
        return completion

    def text(m: re.Match) -> str:
        n = int(m.group(1))
        return listed[n - 1] if 1 <= n <= len(listed) else m.group(0)
    return _REFERENCE.sub(text, completion)
