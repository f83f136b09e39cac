"""Group-relative advantages (GRPO): each sample is scored against the other samples drawn for the same prompt.

A rollout batch holds ``B = n_groups * G`` rewards, laid out as consecutive groups of ``G`` samples of one prompt.
Config picks an estimator by name from ``ADVANTAGES``; each entry maps ``(rewards [B], G) -> float32 [B]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np

from r4t.rl.registry import Registry

AdvantageFn = Callable[[np.ndarray, int], np.ndarray]
ADVANTAGES: Registry[AdvantageFn] = Registry("rl.advantage", "advantage estimator")
Array = TypeVar("Array")  # np.ndarray or torch.Tensor: group_advantages only uses operations both share
register_advantage = ADVANTAGES.register
get_advantage = ADVANTAGES.lookup


def group_advantages(rewards: Array, group_size: int, std_normalize: bool = True, eps: float = 1e-6) -> Array:
    """A_i = (r_i - mean_G(r)) / (std_G(r) + eps), or r_i - mean_G(r) without std normalisation.

    rewards: [B] (numpy or torch), B = n_groups * group_size, each group consecutive. std_G is the population
    standard deviation of the group (ddof=0, torch ``unbiased=False``). A group of equal rewards has zero deviations
    and zero std, so every member gets advantage 0 (the eps keeps the division finite). Returns [B], same type.
    """
    if group_size < 2:
        raise ValueError(f"group_size must be at least 2 to compare samples of a prompt, got {group_size}")
    if rewards.ndim != 1 or rewards.shape[0] % group_size:
        raise ValueError(f"rewards must be 1-D with a length divisible by group_size={group_size}, "
                         f"got shape {tuple(rewards.shape)}")
    r = rewards.reshape(-1, group_size)
    centered = r - r.mean(axis=1, keepdims=True)
    if std_normalize:
        centered = centered / ((centered ** 2).mean(axis=1, keepdims=True) ** 0.5 + eps)
    return centered.reshape(-1)


@register_advantage("grpo")
def grpo(rewards: np.ndarray, group_size: int) -> np.ndarray:
    """GRPO: A_i = (r_i - mean_G) / (std_G + eps). rewards: [B] -> float32 [B]."""
    return group_advantages(np.asarray(rewards, dtype=np.float64), group_size).astype(np.float32)


@register_advantage("grpo_no_std")
def grpo_no_std(rewards: np.ndarray, group_size: int) -> np.ndarray:
    """Dr. GRPO: A_i = r_i - mean_G, no std division (no up-weighting of near-unanimous groups). [B] -> float32 [B]."""
    return group_advantages(np.asarray(rewards, dtype=np.float64), group_size, std_normalize=False).astype(np.float32)
