"""Loading and saving the fan-out LM as a Hugging Face folder (safetensors only), and per-token log-probs.

The same code loads the tiny bootstrapped policy and a real checkpoint (Qwen3-4B, Gemma3-4B) from a path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from r4t.errors import DataError
from r4t.io import atomic_folder, read_json, write_json
from r4t.policy.attention import attention_for

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
    try:
        model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, dtype=torch.float32,
                                                     attn_implementation=attention_for(device)).to(device)
    except (OSError, SafetensorError) as e:  # no weights, or a file cut short
        raise DataError(f"{path}: the model weights cannot be read ({str(e).splitlines()[0]})") from None
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
    prompt_ids: list[list[int]]  # per row, its prompt and its completion (the rows of a GRPO group share one prompt)
    completion_ids: list[list[int]]


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
    return PackedBatch(input_ids, attention, mask, logp_old, [list(p) for p in prompt_ids],
                       [list(c) for c in completion_ids])


def token_logprobs(model: PreTrainedModel, batch: PackedBatch, temperature: float = 1.0,
                   with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log softmax(logits / T) of each completion token, [B, T-1] in `pack`'s layout (0 off the completions);
    with_entropy also the distribution's entropy there.

    Rows with the same prompt (the G samples of a GRPO group) run it once: the prompt's keys and values are
    computed once, repeated for each completion, and the completions attend to them. With a long prompt (items
    listed in it) and short completions this is most of the work saved, and gradients flow through the shared
    prompt as through G copies of it. Only completion positions get the output layer."""
    B, T = batch.input_ids.shape
    device = model.device
    logp = torch.zeros(B, T - 1, device=device)
    entropy = torch.zeros(B, T - 1, device=device) if with_entropy else None
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, prompt in enumerate(batch.prompt_ids):
        groups.setdefault(tuple(prompt), []).append(i)
    decoder = model.get_decoder()
    for prompt, rows in groups.items():
        P, comps = len(prompt), [batch.completion_ids[i] for i in rows]
        width = max(map(len, comps))
        prefix = decoder(input_ids=torch.tensor([prompt], device=device), use_cache=True)
        cache = prefix.past_key_values
        cache.batch_repeat_interleave(len(rows))
        ids = torch.tensor([c + [0] * (width - len(c)) for c in comps], device=device)
        seen = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in comps], device=device)
        attention = torch.cat([torch.ones(len(rows), P, dtype=seen.dtype, device=device), seen], dim=1)
        hidden = decoder(input_ids=ids, attention_mask=attention, past_key_values=cache).last_hidden_state
        # The prompt's last position predicts the first completion token; each completion token the next.
        hidden = torch.cat([prefix.last_hidden_state[:, -1:].expand(len(rows), 1, -1), hidden[:, :-1]], dim=1)
        logp_all = torch.log_softmax(model.lm_head(hidden).float() / temperature, dim=-1)  # [G, width, vocab]
        scored = logp_all.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        for j, (i, c) in enumerate(zip(rows, comps)):
            logp[i, P - 1:P - 1 + len(c)] = scored[j, :len(c)]
            if with_entropy:
                entropy[i, P - 1:P - 1 + len(c)] = -(logp_all[j, :len(c)].exp() * logp_all[j, :len(c)]).sum(-1)
    return logp, entropy
