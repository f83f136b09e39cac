"""Bootstrap of a small fan-out LM, because no pretrained model can be downloaded here.

1. a byte-level BPE tokenizer trained on the catalog and query texts;
2. a small causal LM from a standard architecture config (Qwen3), so the code path that trains it is the one
   that loads a real Qwen3-4B checkpoint from a folder;
3. a supervised warm start on naive fan-outs: for each training query, the texts of its k nearest catalog
   items. That reproduces the paraphrastic collapse of zero-shot fan-out (near-duplicate sub-queries around
   the query) and is the "zero-shot" baseline that RL must beat. With a retrieval-augmented prompt
   (r4t.policy.context) the target instead names the first k listed items by number ("[1]" ... "[k]"), a few
   swapped at random for items listed later: the list puts the nearest item of each category first, as a
   curated set would (an outfit has one pair of shoes; a playlist rarely repeats an artist). Copying long
   texts is beyond a model this small in a demo's budget; naming a listed item is not, and RL then chooses
   among all the listed items.
Everything is seeded: the same inputs and seed give the same weights.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from r4t.config import BootstrapConfig
from r4t.index import ItemIndex
from r4t.policy.attention import attention_for
from r4t.policy.context import PromptContext, fanout_prompts
from r4t.policy.model import pack, save_policy
from r4t.policy.prompt import clean_line, format_fanout

PAD, EOS = "<|pad|>", "<|endoftext|>"


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE: every string (accents, symbols) round-trips, and "\\n" is a token of its own."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, model_max_length=1024)


def model_config(cfg: BootstrapConfig, tokenizer: PreTrainedTokenizerFast) -> Qwen3Config:
    # Untied input/output embeddings: vLLM's in-place weight reload keeps a tied output layer stale.
    return Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.hidden_size // cfg.num_heads, max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None, use_cache=True, attn_implementation=attention_for("cpu"))  # SFT runs on CPU


def naive_fanouts(query_emb: np.ndarray, index: ItemIndex, item_texts: Sequence[str], k: int) -> list[list[str]]:
    """The texts of each query's nearest items, distinct after whitespace/case folding: [Q] lists of k strings."""
    _, rows = index.search(query_emb, 4 * k)
    out = []
    for row in rows:
        seen: dict[str, str] = {}
        for r in row:
            text = clean_line(item_texts[r])
            if r >= 0 and text and text.casefold() not in seen:
                seen[text.casefold()] = text
        out.append(list(seen.values())[:k])
    return out


def context_fanouts(listed: list[list[str]], k: int, rng: np.random.Generator, swap: float = 0.2) -> list[list[str]]:
    """Per query, references to the first k listed items ("[1]" ... "[k]"): the list is in order of preference
    (the nearest item of each category first, r4t.policy.context), so the warm start returns a set that spans
    categories. Each line is swapped with probability `swap` for a reference to a distinct item listed after
    the k-th: the warm start then samples other choices too, which RL needs to explore, and a sampled fan-out
    stays well-formed (a swap never names an item the other lines name). → [Q] lists of "[n]"."""
    out = []
    for lines in listed:
        n = min(k, len(lines))
        spare = list(rng.permutation(np.arange(n + 1, len(lines) + 1)))
        out.append([f"[{spare.pop()}]" if spare and rng.random() < swap else f"[{i}]" for i in range(1, n + 1)])
    return out


def supervised_warm_start(model: Qwen3ForCausalLM, tokenizer: PreTrainedTokenizerFast, prompts: list[str],
                          completions: list[str], cfg: BootstrapConfig, seed: int) -> list[float]:
    """Cross-entropy on completion tokens (EOS included); cosine learning-rate decay. Returns per-epoch loss."""
    g = torch.Generator().manual_seed(seed)
    p_ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    c_ids = [tokenizer(c, add_special_tokens=False).input_ids + [tokenizer.eos_token_id] for c in completions]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.sft_lr, weight_decay=0.0)
    total = cfg.sft_epochs * math.ceil(len(prompts) / cfg.sft_batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / total, 1.0))))
    model.train()
    losses = []
    for _ in range(cfg.sft_epochs):
        order = torch.randperm(len(prompts), generator=g).tolist()
        epoch_loss, n = 0.0, 0
        for start in range(0, len(order), cfg.sft_batch_size):
            idx = order[start:start + cfg.sft_batch_size]
            batch = pack([p_ids[i] for i in idx], [c_ids[i] for i in idx], tokenizer.pad_token_id)
            hidden = model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
            # The output layer only where a completion token is predicted: with items listed in the prompt, most
            # positions are prompt, and the vocabulary projection is most of this small model's compute.
            scored = batch.completion_mask.bool()
            loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[:, :-1][scored]),
                                                     batch.input_ids[:, 1:][scored])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            epoch_loss, n = epoch_loss + loss.item() * len(idx), n + len(idx)
        losses.append(epoch_loss / n)
    model.eval()
    return losses


def bootstrap_policy(out_dir: str | Path, item_texts: Sequence[str], queries: Sequence[str], query_emb: np.ndarray,
                     index: ItemIndex, cfg: BootstrapConfig, template: str, k: int, seed: int,
                     provenance: dict, context: PromptContext | None = None) -> Path:
    """Tokenizer + Qwen3-architecture LM + SFT, saved as a Hugging Face folder. Without a context the targets are
    naive fan-outs; with one, references to the first k listed items."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    prompts, listed = fanout_prompts(queries, query_emb, template, k, context)
    fanouts = (naive_fanouts(query_emb, index, item_texts, k) if context is None
               else context_fanouts(listed, k, np.random.default_rng(seed)))
    completions = [format_fanout(f) for f in fanouts]
    tokenizer = train_tokenizer(list(item_texts) + prompts + completions, cfg.vocab_size)
    model = Qwen3ForCausalLM(model_config(cfg, tokenizer))
    losses = supervised_warm_start(model, tokenizer, prompts, completions, cfg, seed)
    info = {"step": 0, "kind": "warm_start", "parent": None, "sft_loss": losses, "sft_examples": len(prompts),
            "parameters": sum(p.numel() for p in model.parameters()), **provenance}
    return save_policy(model, tokenizer, out_dir, info)
