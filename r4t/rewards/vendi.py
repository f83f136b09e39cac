"""Vendi score (Friedman & Dieng 2023) for the cosine kernel.

VS(X) = exp(-sum_i λ_i log λ_i), λ = eigenvalues of K/n with K_ij = cos(x_i, x_j). The non-zero eigenvalues
of X Xᵀ/n and Xᵀ X/n coincide, so we decompose whichever matrix is smaller (n×n or d×d), in float64.
"""

from __future__ import annotations

import numpy as np


def vendi_score(X: np.ndarray) -> np.ndarray:
    """X: [..., n, d] (rows need not be normalized) → VS: [...] float64, between 1 and min(n, d)."""
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=-1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("vendi_score: zero vector in X; the cosine kernel is undefined for it")
    X = X / norms
    n, d = X.shape[-2:]
    Xt = np.swapaxes(X, -1, -2)
    gram = (X @ Xt) if n <= d else (Xt @ X)
    eig = np.clip(np.linalg.eigvalsh(gram / n), 0.0, None)
    eig = eig / eig.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.sum(np.where(eig > 0, eig * np.log(eig), 0.0), axis=-1)
    return np.exp(entropy)


def normalized_vendi(vs: np.ndarray, n: int) -> np.ndarray:
    """(VS - 1) / (n - 1): 0 for n identical items, 1 for n mutually orthogonal ones."""
    return (np.asarray(vs) - 1.0) / max(n - 1, 1)
