"""Set-level rewards and set metrics: pure batched functions, plus a scorer that Ray actors can host."""

from r4t.rewards.parse import ParsedFanout, parse_fanout
from r4t.rewards.terms import alignment, composite, diversity, groundedness, soft_coverage, wscr_coverage
from r4t.rewards.vendi import normalized_vendi, vendi_score

__all__ = ["ParsedFanout", "alignment", "composite", "diversity", "groundedness", "normalized_vendi",
           "parse_fanout", "soft_coverage", "vendi_score", "wscr_coverage"]
