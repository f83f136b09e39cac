"""Generation backends of the fan-out LM: one interface, two engines (transformers; vLLM).

Every backend returns, for each prompt, n sampled completions with the token ids and the log-probability of
each sampled token under the sampling distribution softmax(logits / temperature) — before top-p truncation —
which is exactly what the learner recomputes, so the Soft-GRPO ratio pi_theta / pi_old starts at 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass(frozen=True)
class SamplingSettings:
    n: int = 1  # completions per prompt (the GRPO group size in training)
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 160
    seed: int = 0
    logprobs: bool = True  # retrieval needs only the text: skip the log-prob pass


@dataclass
class Rollout:
    """One sampled completion. `logprobs[i]` belongs to `completion_ids[i]`; the ids end with EOS unless the
    completion was cut at max_new_tokens (`truncated`)."""

    prompt_index: int
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    text: str
    truncated: bool = False
    extra: dict = field(default_factory=dict)


class GenerationBackend(Protocol):
    def generate(self, prompts: list[str], settings: SamplingSettings) -> list[Rollout]:
        """len(prompts) * settings.n rollouts, grouped by prompt (all n samples of prompt 0 first)."""

    def set_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load new policy weights (same architecture) in place."""
