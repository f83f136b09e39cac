"""Loading and saving the fan-out LM as a Hugging Face folder (safetensors only), and per-token log-probs.

The same code loads the tiny bootstrapped policy and a real checkpoint (Qwen3-4B, Gemma3-4B) from a path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from r4t.errors import DataError
from r4t.io import atomic_folder, read_json, write_json

INFO_FILE = "r4t.json"  # step, reward stats, parent checkpoint; written last, so its presence marks a whole folder


def load_policy(path: str | os.PathLike, device: str = "cpu") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise DataError(f"{path}: not a Hugging Face model folder (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.eos_token_id is None:
        raise DataError(f"{path}: the tokenizer has no end-of-sequence token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # use_safetensors: a pickled pytorch_model.bin is never read.
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, dtype=torch.float32).to(device)
    return model, tokenizer


def save_policy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: str | os.PathLike,
                info: dict, write_extra: Callable[[Path], None] | None = None) -> Path:
    """Write into a temporary sibling folder, then rename: a killed save never leaves a folder that looks whole.
    write_extra(folder) adds more files (e.g. the optimizer state) before r4t.json."""
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if write_extra is not None:
            write_extra(tmp)
        write_json(tmp / INFO_FILE, info)
    return folder


def read_info(folder: str | os.PathLike) -> dict:
    return read_json(Path(folder) / INFO_FILE)


@dataclass
class PackedBatch:
    """Prompt+completion sequences, right-padded. Column j of `completion_mask`/`logp_old` scores token j+1."""

    input_ids: torch.Tensor  # [B, T] long
    attention_mask: torch.Tensor  # [B, T] long
    completion_mask: torch.Tensor  # [B, T-1] float, 1 where token j+1 is a completion token
    logp_old: torch.Tensor  # [B, T-1] float, sampling-policy log-probs at completion positions, 0 elsewhere


def pack(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int,
         logprobs: list[list[float]] | None = None) -> PackedBatch:
    B = len(prompt_ids)
    T = max(len(p) + len(c) for p, c in zip(prompt_ids, completion_ids))
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    attention = torch.zeros((B, T), dtype=torch.long)
    mask = torch.zeros((B, T - 1))
    logp_old = torch.zeros((B, T - 1))
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        n = len(p) + len(c)
        input_ids[i, :n] = torch.tensor(p + c)
        attention[i, :n] = 1
        mask[i, len(p) - 1: n - 1] = 1
        if logprobs is not None:
            logp_old[i, len(p) - 1: n - 1] = torch.tensor(logprobs[i])
    return PackedBatch(input_ids, attention, mask, logp_old)


def token_logprobs(model: PreTrainedModel, batch: PackedBatch, temperature: float = 1.0,
                   with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log softmax(logits / T) of each next token: [B, T-1]; with_entropy also the distribution's entropy.
    Columns before the batch's first completion position are 0: only the tail from there gets the output
    layer, which with a long prompt (items listed in it) is most of the work saved."""
    device = model.device
    B, T = batch.input_ids.shape
    first = int(batch.completion_mask.any(dim=0).to(torch.int8).argmax())  # column j scores token j + 1
    logits = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                   logits_to_keep=T - first).logits  # positions first .. T-1
    logp_all = torch.log_softmax(logits[:, :-1].float() / temperature, dim=-1)
    tail = logp_all.gather(-1, batch.input_ids[:, first + 1:].to(device).unsqueeze(-1)).squeeze(-1)
    logp = torch.zeros(B, T - 1, device=device, dtype=tail.dtype)
    logp[:, first:] = tail
    entropy = None
    if with_entropy:
        entropy = torch.zeros_like(logp)
        entropy[:, first:] = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy
