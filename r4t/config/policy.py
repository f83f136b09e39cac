"""The fan-out LM, shared by every stage that runs it (RL, synthesis, the LM methods of eval): `policy` is a
PolicyConfig in every job file, `policy.bootstrap` the tiny LM built here when no checkpoint is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from r4t.config.common import _require


@dataclass
class BootstrapConfig:
    """The tiny policy built here when no checkpoint is given (policy.init=bootstrap)."""

    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    max_positions: int = 512
    sft_epochs: int = 10
    sft_lr: float = 3e-3
    sft_batch_size: int = 32

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                     "max_positions", "sft_epochs", "sft_batch_size"):
            _require(getattr(self, name) > 0, f"policy.bootstrap.{name}", getattr(self, name), "must be positive")
        _require(self.hidden_size % self.num_heads == 0, "policy.bootstrap.hidden_size", self.hidden_size,
                 f"must be a multiple of num_heads={self.num_heads}")
        _require(self.num_heads % self.num_kv_heads == 0, "policy.bootstrap.num_kv_heads", self.num_kv_heads,
                 f"must divide num_heads={self.num_heads}")
        _require(self.sft_lr > 0, "policy.bootstrap.sft_lr", self.sft_lr, "must be positive")


@dataclass
class PolicyConfig:
    init: str = "bootstrap"  # "bootstrap" (tiny LM built and warm-started here) or a Hugging Face model folder
    backend: str = "transformers"  # transformers | vllm
    device: str = "cpu"
    # str.format pattern with {query} (and {k}, {context}); without items listed: "query: {query}\nsub-queries:\n"
    template: str = ("catalog items near the query:\n{context}\nquery: {query}\n"
                     "{k} sub-queries, one per line ([n] names a listed item):\n")
    context_items: int = 16  # catalog items nearest the query listed, numbered, in the prompt as {context}; 0 = none
    context_per_category: int = 1  # listed items of one category before the nearest of the rest (0 = no cap)
    max_new_tokens: int = 96
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)

    def __post_init__(self) -> None:
        _require(self.backend in ("transformers", "vllm"), "policy.backend", self.backend,
                 "must be transformers or vllm")
        _require("{query}" in self.template, "policy.template", self.template, "must contain {query}")
        _require(self.context_items >= 0, "policy.context_items", self.context_items, "must be >= 0")
        _require(self.context_per_category >= 0, "policy.context_per_category", self.context_per_category,
                 "must be >= 0")
        _require(("{context}" in self.template) == (self.context_items > 0), "policy.template", self.template,
                 f"must contain {{context}} exactly when policy.context_items > 0 (it is {self.context_items})")
        _require(self.max_new_tokens > 0, "policy.max_new_tokens", self.max_new_tokens, "must be positive")


def _check_sampling(obj: Any, section: str) -> None:
    """The checks of a stage that samples fan-outs from the policy (RL rollouts, synthesis): temperature, top_p and
    the time one remote call may take, read as <section>.<name>."""
    _require(obj.temperature > 0, f"{section}.temperature", obj.temperature, "must be positive")
    _require(0 < obj.top_p <= 1, f"{section}.top_p", obj.top_p, "must be in (0, 1]")
    _require(obj.timeout_s > 0, f"{section}.timeout_s", obj.timeout_s, "must be positive")
