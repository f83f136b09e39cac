"""Attention for the fan-out LM on CPU: grouped-query attention without copying keys and values.

transformers' "sdpa" attention repeats each key/value head for its query heads whenever a padding mask is given
(left-padded batches always have one) and hands PyTorch's kernel the copies: during decoding that copies the
whole KV cache at every step, for every layer. PyTorch's own kernel takes the grouped heads directly
(`enable_gqa`) and, on CPU, with a mask too; this is that, registered under its own name. The masks are
transformers' SDPA masks, so outputs are those of "sdpa". Kept to CPU: on CUDA a masked GQA call leaves the
fused kernels for the math one.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

GQA_SDPA = "r4t_gqa_sdpa"


def gqa_sdpa_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                       is_causal: bool | None = None, **_) -> tuple[torch.Tensor, None]:
    """query [B, H, q, hd], key/value [B, H_kv, k, hd], mask [B, 1, q, k] (bool) or None → ([B, q, H, hd], None).
    Without a mask the attention is causal for a prompt (q == k; transformers drops the mask only then) and
    full for one decoded token."""
    causal = (module.is_causal if is_causal is None else is_causal) and attention_mask is None and query.shape[2] > 1
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling,
        is_causal=causal, enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(GQA_SDPA, gqa_sdpa_attention)
AttentionMaskInterface.register(GQA_SDPA, sdpa_mask)


def attention_for(device: str | torch.device) -> str:
    """The attention implementation to load a policy with on `device`."""
    return GQA_SDPA if torch.device(device).type == "cpu" else "sdpa"
