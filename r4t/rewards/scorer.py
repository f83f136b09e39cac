"""RewardScorer: holds the encoder and the index once, scores batches of fan-outs with every term returned.

Built to live inside a Ray actor: construction loads the models, `score` is a pure function of its inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from r4t.config import RewardConfig
from r4t.embed import TextEncoder
from r4t.errors import DataError
from r4t.index import ItemIndex, check_manifest
from r4t.rewards.parse import parse_fanout
from r4t.rewards.terms import alignment, composite, diversity, groundedness, wscr_coverage
from r4t.storage import is_uri

TERMS = ("reward", "composite", "ground", "div", "div_raw", "align", "recall", "hit")


class RewardScorer:
    def __init__(self, encoder: TextEncoder, index: ItemIndex, item_emb: np.ndarray,
                 config: RewardConfig | None = None):
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
        (the parsed lines, [] where malformed). `reward` is WSCR recall where a reference set is given, the
        OAR composite otherwise, and `malformed_penalty` for a completion that does not parse (whose terms,
        composite included, are NaN)."""
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

        # One encoder call and one index search for the whole batch.
        texts = [queries[i] for i in ok] + [s for i in ok for s in parsed[i].subqueries]
        emb = self._encode_unique(texts)
        q_emb, s_emb = emb[: len(ok)], emb[len(ok):].reshape(len(ok), cfg.k, -1)
        depth = cfg.wscr_m if any(refs[i] is not None for i in ok) else 1
        rows = self.index.search(s_emb.reshape(len(ok) * cfg.k, -1), depth)[1].reshape(len(ok), cfg.k, depth)

        out["top1"][ok] = rows[:, :, 0]
        if embeddings:
            out["subquery_emb"][ok] = s_emb
        top1 = self.item_emb[rows[:, :, 0]]
        ground = groundedness(s_emb, top1)
        align = alignment(s_emb, q_emb)
        div_raw, div = diversity(top1)
        comp = composite(ground, div, align, cfg.w_ground, cfg.w_div, cfg.w_align)
        for name, values in (("ground", ground), ("align", align), ("div_raw", div_raw), ("div", div),
                             ("composite", comp), ("reward", comp)):
            out[name][ok] = values
        wscr = [j for j, i in enumerate(ok) if refs[i] is not None]
        if wscr:
            recall, hit = wscr_coverage([rows[j, :, : cfg.wscr_m] for j in wscr],
                                        [self.reference_rows(refs[ok[j]]) for j in wscr])
            out["recall"][ok[wscr]] = out["reward"][ok[wscr]] = recall
            out["hit"][ok[wscr]] = hit
        return out


def scorer_factory(run_dir: str, spec, embed_cfg, index_cfg, reward_cfg: RewardConfig, seed: int):
    """A picklable recipe for a RewardScorer over a prepared catalog (the driver prepared it already). The run
    directory is made absolute here: the actor that builds the scorer may run in another working directory
    (a URI stays one: prepare_catalog fetches the catalog onto the actor's node)."""
    run_dir = run_dir if is_uri(run_dir) else str(Path(run_dir).resolve())

    def build():
        from r4t.catalog import prepare_catalog  # catalog sits above rewards: import at call time
        encoder = TextEncoder(embed_cfg.model, embed_cfg.device, embed_cfg.batch_size)
        cat = prepare_catalog(spec, run_dir, encoder, index_cfg, seed, progress=False)
        return RewardScorer(encoder, cat.index, cat.item_emb, reward_cfg)
    return build
