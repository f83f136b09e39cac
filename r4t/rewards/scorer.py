"""RewardScorer: holds the encoder and the index once, scores batches of fan-outs with every term returned.

Built to live inside a Ray actor: construction loads the models, `score` is a pure function of its inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from r4t.catalog import prepare_catalog
from r4t.config import RewardConfig
from r4t.embed import TextEncoder
from r4t.errors import DataError
from r4t.index import ItemIndex
from r4t.io import check_manifest
from r4t.rewards.parse import parse_fanout
from r4t.rewards.terms import alignment, composite, diversity, groundedness, soft_coverage, wscr_coverage
from r4t.storage import is_uri

TERMS = ("reward", "composite", "ground", "div", "div_raw", "align", "recall", "hit")


class RewardScorer:
    def __init__(self, encoder: TextEncoder | None, index: ItemIndex, item_emb: np.ndarray,
                 config: RewardConfig | None = None):
        """encoder None: an embedding-only scorer (`score_embeddings`; `score` needs texts encoded)."""
        if encoder is not None:
            check_manifest(index.manifest, encoder.manifest, "index manifest vs reward encoder")
        if item_emb.shape != (len(index.item_ids), index.dim):
            raise DataError(f"reward scorer: item embeddings {item_emb.shape} do not match the index "
                            f"({len(index.item_ids)} items, dim {index.dim})")
        self.encoder, self.index, self.item_emb = encoder, index, item_emb
        self.config = config or RewardConfig()
        self.row_of = {item_id: row for row, item_id in enumerate(index.item_ids)}

    def reference_rows(self, item_ids: Sequence[str]) -> set[int]:
        missing = [i for i in item_ids if i not in self.row_of]
        if missing:
            raise DataError(f"reference set names items not in the index catalog: {missing[:5]}")
        return {self.row_of[i] for i in item_ids}

    def _encode_unique(self, texts: list[str]) -> np.ndarray:
        """Encode each distinct text once: a GRPO group repeats its query G times, collapsed fan-outs repeat lines."""
        unique = list(dict.fromkeys(texts))
        emb = self.encoder.encode(unique)
        pos = {t: i for i, t in enumerate(unique)}
        return emb[[pos[t] for t in texts]]

    def score(self, queries: Sequence[str], completions: Sequence[str | Sequence[str]],
              reference_sets: Sequence[Sequence[str] | None] | None = None,
              embeddings: bool = False) -> dict[str, np.ndarray]:
        """Score B fan-outs. Returns per-term arrays [B] (NaN where not applicable), `malformed` [B] bool,
        `error` (the parser's message or "") and `top1` [B, k] (each sub-query's first item row, -1 where
        malformed); with `embeddings`, also `subquery_emb` [B, k, d] (NaN where malformed) and `subqueries`
        (the parsed lines, [] where malformed). `reward` is the WSCR reward (reward.wscr_reward: the exact
        coverage `recall`, or its soft version) where a reference set is given, the OAR composite otherwise, and
        `malformed_penalty` for a completion that does not parse (whose terms, composite included, are NaN)."""
        cfg, B = self.config, len(queries)
        if len(completions) != B or (reference_sets is not None and len(reference_sets) != B):
            raise ValueError(f"score: {B} queries, {len(completions)} completions, "
                             f"{len(reference_sets) if reference_sets is not None else B} reference sets")
        refs = list(reference_sets) if reference_sets is not None else [None] * B
        parsed = [parse_fanout(c, cfg.k) for c in completions]
        out = {name: np.full(B, np.nan) for name in TERMS}
        out["malformed"] = np.array([not p.ok for p in parsed])
        out["error"] = np.array([p.error or "" for p in parsed], dtype=object)
        out["reward"][out["malformed"]] = cfg.malformed_penalty
        out["top1"] = np.full((B, cfg.k), -1, dtype=np.int64)  # catalog row each sub-query retrieves first
        ok = np.flatnonzero(~out["malformed"])
        if embeddings:
            out["subquery_emb"] = np.full((B, cfg.k, self.index.dim), np.nan, dtype=np.float32)
            out["subqueries"] = [list(p.subqueries) if p.ok else [] for p in parsed]
        if len(ok) == 0:
            return out
        if self.encoder is None:
            raise ValueError("score: this scorer has no encoder (built for score_embeddings only)")

        # One encoder call for the whole batch; the terms come from the embedding-level entry point.
        texts = [queries[i] for i in ok] + [s for i in ok for s in parsed[i].subqueries]
        emb = self._encode_unique(texts)
        q_emb, s_emb = emb[: len(ok)], emb[len(ok):].reshape(len(ok), cfg.k, -1)
        scored = self.score_embeddings(q_emb, s_emb, [refs[i] for i in ok])
        for name in TERMS:
            out[name][ok] = scored[name]
        out["top1"][ok] = scored["top1"]
        if embeddings:
            out["subquery_emb"][ok] = s_emb
        return out

    def score_embeddings(self, query_emb: np.ndarray, subquery_emb: np.ndarray,
                         reference_sets: Sequence[Sequence[str] | None] | None = None) -> dict[str, np.ndarray]:
        """Score B fan-outs given as embeddings: query_emb [B, d], subquery_emb [B, k, d] (unit rows: sub-query
        embeddings, or the rows of a policy acting in embedding space). The reward of the text path (`score`) is
        computed here, so both paths give the same composite / WSCR reward for the same embeddings. Returns
        the per-term arrays [B] (recall and hit NaN without a reference set; recall is always the exact coverage,
        whichever reward.wscr_reward) and `top1` [B, k]."""
        cfg = self.config
        B, k = subquery_emb.shape[:2]
        refs = list(reference_sets) if reference_sets is not None else [None] * B
        if query_emb.shape != (B, self.index.dim) or subquery_emb.shape[2] != self.index.dim or len(refs) != B:
            raise ValueError(f"score_embeddings: queries {query_emb.shape}, fan-outs {subquery_emb.shape}, "
                             f"{len(refs)} reference sets; index dim {self.index.dim}")
        out = {name: np.full(B, np.nan) for name in TERMS}
        depth = cfg.wscr_m if any(r is not None for r in refs) else 1
        rows = self.index.search(subquery_emb.reshape(B * k, -1), depth)[1].reshape(B, k, depth)
        out["top1"] = rows[:, :, 0]  # catalog row each sub-query retrieves first
        top1 = self.item_emb[rows[:, :, 0]]
        out["ground"] = groundedness(subquery_emb, top1)
        out["align"] = alignment(subquery_emb, query_emb)
        out["div_raw"], out["div"] = diversity(top1)
        out["composite"] = composite(out["ground"], out["div"], out["align"], cfg.w_ground, cfg.w_div, cfg.w_align)
        out["reward"] = out["composite"].copy()
        wscr = [b for b in range(B) if refs[b] is not None]
        if wscr:
            retrieved, reference = rows[wscr, :, : cfg.wscr_m], [self.reference_rows(refs[b]) for b in wscr]
            recall, out["hit"][wscr] = wscr_coverage(list(retrieved), reference)
            out["recall"][wscr] = recall
            out["reward"][wscr] = recall if cfg.wscr_reward == "coverage" else soft_coverage(
                retrieved.reshape(len(wscr), -1), padded_rows(reference), self.item_emb)
        return out


def padded_rows(sets: Sequence[set[int]]) -> np.ndarray:
    """Row sets → [len(sets), largest size] int64, each sorted and padded with -1."""
    out = np.full((len(sets), max(len(s) for s in sets)), -1, np.int64)
    for i, rows in enumerate(sets):
        out[i, : len(rows)] = sorted(rows)
    return out


def scorer_factory(run_dir: str, spec, embed_cfg, index_cfg, reward_cfg: RewardConfig, seed: int):
    """A picklable recipe for a RewardScorer over a prepared catalog (the driver prepared it already). The run
    directory is made absolute here: the actor that builds the scorer may run in another working directory
    (a URI stays one: prepare_catalog fetches the catalog onto the actor's node)."""
    run_dir = run_dir if is_uri(run_dir) else str(Path(run_dir).resolve())

    def build():
        encoder = TextEncoder(embed_cfg.model, embed_cfg.device, embed_cfg.batch_size)
        cat = prepare_catalog(spec, run_dir, encoder, index_cfg, seed, progress=False)
        return RewardScorer(encoder, cat.index, cat.item_emb, reward_cfg)
    return build
