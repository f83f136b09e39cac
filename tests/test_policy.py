"""The fan-out LM without Ray: prompt format, tokenizer, bootstrap determinism, transformers generation and
its log-probs, checkpoint save/load with the optimizer state."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from conftest import TINY_K, TINY_QUERIES
from r4t.config import BootstrapConfig, RLSettings
from r4t.errors import DataError
from r4t.policy.backend import SamplingSettings
from r4t.policy.bootstrap import bootstrap_policy, naive_fanouts, train_tokenizer
from r4t.policy.attention import GQA_SDPA
from r4t.policy.hf_backend import TransformersBackend, next_token
from r4t.policy.model import INFO_FILE, load_policy, pack, token_logprobs
from r4t.policy.prompt import PLAIN_TEMPLATE, build_prompt, format_fanout
from r4t.rewards.parse import parse_fanout
from r4t.rl.actors import Learner
from r4t.rl.advantages import get_advantage
from r4t.optim_state import load_optimizer
from r4t.rl.checkpoint import latest_checkpoint


def test_format_fanout_parses_back() -> None:
    subqueries = ["red  leather\nboots", "gold hoops", "1990s denim jacket"]
    text = format_fanout(subqueries)
    assert text.splitlines()[0] == "1. red leather boots"  # a line break inside a sub-query cannot split it
    assert parse_fanout(text, 3).subqueries == ("red leather boots", "gold hoops", "1990s denim jacket")
    assert build_prompt("  summer\twedding ", PLAIN_TEMPLATE) == "query: summer wedding\nsub-queries:\n"


def test_tokenizer_round_trips_any_text() -> None:
    tok = train_tokenizer(["Beyoncé — Halo", "red leather boots", "query: x\nsub-queries:\n"], vocab_size=300)
    for text in ("Beyoncé — Halo\n2. Sigur Rós", "emoji ✨ and tabs\t!", "unseen: ţ ğ 漢字"):
        assert tok.decode(tok(text).input_ids) == text
    assert tok.eos_token_id is not None and tok.pad_token_id is not None
    assert tok("\n").input_ids == [tok.convert_tokens_to_ids(tok.tokenize("\n"))[0]]


def test_naive_fanouts_are_distinct_nearest_items(tiny_catalog, encoder) -> None:
    fanouts = naive_fanouts(encoder.encode(["leather boots"]), tiny_catalog.index, tiny_catalog.texts, k=4)
    assert len(fanouts[0]) == 4 and len(set(fanouts[0])) == 4
    assert "red leather ankle boots" in fanouts[0] and "brown leather hiking boots" in fanouts[0]


def test_bootstrap_is_reproducible(tmp_path: Path, tiny_catalog, encoder, tiny_policy) -> None:
    cfg = BootstrapConfig(vocab_size=400, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2,
                          num_kv_heads=1, max_positions=128, sft_epochs=40, sft_lr=3e-3, sft_batch_size=4)
    again = bootstrap_policy(tmp_path / "again", tiny_catalog.texts, TINY_QUERIES, encoder.encode(TINY_QUERIES),
                             tiny_catalog.index, cfg, PLAIN_TEMPLATE, TINY_K, seed=0, provenance={})
    a, b = load_file(str(tiny_policy / "model.safetensors")), load_file(str(again / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    info = json.loads((again / INFO_FILE).read_text())
    assert info["sft_loss"][-1] < info["sft_loss"][0] / 2  # the warm start learned something
    model, _ = load_policy(again)
    assert not model.config.tie_word_embeddings  # vLLM's in-place reload needs an untied output layer


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_transformers_backend_logprobs_match_the_learner(tiny_policy: Path, temperature: float) -> None:
    backend = TransformersBackend(str(tiny_policy))
    prompts = [build_prompt(q, k=TINY_K) for q in TINY_QUERIES[:3]]
    rollouts = backend.generate(prompts, SamplingSettings(n=4, temperature=temperature, max_new_tokens=48, seed=7))
    assert [r.prompt_index for r in rollouts] == [0] * 4 + [1] * 4 + [2] * 4
    eos = backend.tokenizer.eos_token_id
    for r in rollouts:
        assert r.prompt_ids == backend.tokenizer(prompts[r.prompt_index], add_special_tokens=False).input_ids
        assert r.truncated or (r.completion_ids[-1] == eos and eos not in r.completion_ids[:-1])
        assert len(r.logprobs) == len(r.completion_ids)
    # Recompute each sequence alone (no padding at all) in float64 against the backend's batched values.
    model = backend.model.double()
    for r in rollouts:
        batch = pack([r.prompt_ids], [r.completion_ids], backend.tokenizer.pad_token_id)
        with torch.no_grad():
            logp, _ = token_logprobs(model, batch, temperature)
        np.testing.assert_allclose(logp[0][batch.completion_mask[0].bool()].numpy(), r.logprobs, atol=1e-4)
    again = TransformersBackend(str(tiny_policy)).generate(
        prompts, SamplingSettings(n=4, temperature=temperature, max_new_tokens=48, seed=7))
    assert [r.text for r in again] == [r.text for r in rollouts]


def test_token_logprobs_shares_each_prompt_and_matches_one_full_forward(tiny_policy: Path) -> None:
    """Rows with one prompt run it once; values and gradients must equal a plain forward over every full sequence."""
    model, tok = load_policy(tiny_policy)
    model = model.double()
    g = torch.Generator().manual_seed(3)
    prompt_a, prompt_b = (torch.randint(2, len(tok), (n,), generator=g).tolist() for n in (37, 21))
    prompts = [prompt_a] * 3 + [prompt_b] * 2 + [prompt_a]  # a group need not be contiguous
    completions = [torch.randint(2, len(tok), (n,), generator=g).tolist() for n in (5, 9, 1, 7, 3, 4)]
    batch = pack(prompts, completions, tok.pad_token_id)
    logp, entropy = token_logprobs(model, batch, 0.7, with_entropy=True)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1] / 0.7
    full = torch.log_softmax(logits, dim=-1)
    expected = full.gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1) * batch.completion_mask
    expected_entropy = -(full.exp() * full).sum(-1) * batch.completion_mask
    torch.testing.assert_close(logp, expected.to(logp.dtype), rtol=0, atol=1e-5)  # float32 log-softmax
    torch.testing.assert_close(entropy, expected_entropy.to(entropy.dtype), rtol=0, atol=1e-5)
    grads = torch.autograd.grad(logp.sum() + entropy.sum(), list(model.parameters()))
    want = torch.autograd.grad(expected.sum() + expected_entropy.sum(), list(model.parameters()))
    for got, ref in zip(grads, want):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_greedy_generation_matches_transformers_generate(tiny_policy: Path) -> None:
    """The shared-prompt sampler decodes exactly what `generate` of transformers decodes, prompts of unequal
    length (left padding) included."""
    backend = TransformersBackend(str(tiny_policy))
    prompts = [build_prompt(q, k=TINY_K) for q in TINY_QUERIES[:3]]
    rollouts = backend.generate(prompts, SamplingSettings(n=2, temperature=0.0, max_new_tokens=24, logprobs=False))
    tok = backend.tokenizer
    for r in rollouts:
        ids = torch.tensor([r.prompt_ids])
        out = backend.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=24, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        assert r.completion_ids == out[0, ids.shape[1]:].tolist()[:len(r.completion_ids)]
        assert r.truncated == (tok.eos_token_id not in r.completion_ids)


def test_next_token_keeps_the_top_p_nucleus() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).expand(400, 3)
    g = torch.Generator().manual_seed(0)
    assert set(next_token(logits, 1.0, 0.5, g).tolist()) == {0}
    assert set(next_token(logits, 1.0, 0.6, g).tolist()) == {0, 1}
    assert set(next_token(logits, 1.0, 1.0, g).tolist()) == {0, 1, 2}
    assert set(next_token(logits, 0.0, 1.0, g).tolist()) == {0}


def test_next_token_draws_each_token_with_its_probability() -> None:
    """The inverse-CDF draw: frequencies match softmax(logits / T), a token of probability 0 is never drawn."""
    probs = torch.tensor([0.0, 0.45, 0.3, 0.0, 0.2, 0.05])
    logits = torch.log(probs).expand(40_000, 6) * 0.5  # at temperature 0.5 the probabilities come back
    counts = torch.bincount(next_token(logits, 0.5, 1.0, torch.Generator().manual_seed(1)), minlength=6)
    assert counts[0] == counts[3] == 0
    torch.testing.assert_close(counts / counts.sum(), probs, rtol=0, atol=0.01)  # 4 standard errors or more


def test_cpu_attention_equals_transformers_sdpa(tiny_policy: Path) -> None:
    """The policy on CPU runs grouped-query attention without copying keys/values (r4t.policy.attention); its
    logits and gradients equal those of transformers' "sdpa" on a left-padded batch, prompt and decoding step."""
    model, tok = load_policy(tiny_policy)
    assert model.config._attn_implementation == GQA_SDPA and model.config.num_key_value_heads < \
        model.config.num_attention_heads
    ref = AutoModelForCausalLM.from_pretrained(tiny_policy, attn_implementation="sdpa", dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, len(tok), (3, 17), generator=g)
    attention = torch.ones_like(ids)
    attention[0, :5] = attention[2, :9] = 0  # left padding
    ids = ids.masked_fill(attention == 0, tok.pad_token_id)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    outs = [m(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=True) for m in (model, ref)]
    torch.testing.assert_close(outs[0].logits[attention.bool()], outs[1].logits[attention.bool()])
    step = torch.randint(2, len(tok), (3, 1), generator=g)
    attention = torch.cat([attention, torch.ones_like(step)], dim=1)
    steps = [m(input_ids=step, attention_mask=attention, position_ids=positions[:, -1:] + 1,
               past_key_values=o.past_key_values,
               use_cache=True).logits for m, o in zip((model, ref), outs)]
    torch.testing.assert_close(steps[0], steps[1])
    grads = [torch.autograd.grad(m(input_ids=ids, attention_mask=attention[:, :-1]).logits.logsumexp(-1).sum(),
                                 list(m.parameters())) for m in (model, ref)]
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_learner_checkpoint_round_trips_weights_and_optimizer(tmp_path: Path, tiny_policy: Path) -> None:
    backend = TransformersBackend(str(tiny_policy))
    rollouts = backend.generate([build_prompt(q, k=TINY_K) for q in TINY_QUERIES[:2]],
                                SamplingSettings(n=4, max_new_tokens=48, seed=1))
    advantages = get_advantage("grpo")(np.arange(len(rollouts), dtype=float) % 3, 4)
    learner = Learner(str(tiny_policy), RLSettings(lr=1e-3))
    learner.update(rollouts, advantages)
    folder = tmp_path / "checkpoints" / "step-000001"
    learner.save(str(folder), {"step": 1})
    assert latest_checkpoint(tmp_path) == folder
    restored = Learner(str(folder), RLSettings(lr=1e-3), optimizer_from=str(folder))
    for key, value in learner.state_dict().items():
        assert torch.equal(value, restored.state_dict()[key])
    a, b = learner.optimizer_state(), restored.optimizer_state()
    assert a["param_groups"] == b["param_groups"]
    for pid, slots in a["state"].items():
        for name, value in slots.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["state"][pid][name])), (pid, name)
    # The same next update from both gives the same weights: the resume is exact, not approximate.
    learner.update(rollouts, advantages)
    restored.update(rollouts, advantages)
    for key, value in learner.state_dict().items():
        assert torch.equal(value, restored.state_dict()[key])


def test_load_optimizer_refuses_a_folder_without_state(tmp_path: Path, tiny_policy: Path) -> None:
    learner = Learner(str(tiny_policy), RLSettings())
    with pytest.raises(DataError, match="no optimizer state"):
        load_optimizer(learner.optimizer, tmp_path)


def test_load_policy_refuses_a_non_model_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="config.json"):
        load_policy(tmp_path)


def test_grpo_kl_reference_is_the_initial_policy_even_when_resuming(tmp_path: Path, tiny_policy: Path) -> None:
    """A resumed grpo_kl learner loads its weights from the checkpoint but keeps the run's initial policy as
    the frozen reference of the k3 term."""
    learner = Learner(str(tiny_policy), RLSettings(lr=1e-2))
    backend = TransformersBackend(str(tiny_policy))
    rollouts = backend.generate([build_prompt(TINY_QUERIES[0], k=TINY_K)], SamplingSettings(n=4, max_new_tokens=48))
    learner.update(rollouts, get_advantage("grpo")(np.array([0.0, 1.0, 0.0, 1.0]), 4))
    learner.save(str(tmp_path / "step-000001"), {"step": 1})
    resumed = Learner(str(tmp_path / "step-000001"), RLSettings(loss="grpo_kl"), reference_path=str(tiny_policy))
    initial = load_file(str(tiny_policy / "model.safetensors"))
    reference = {k: v for k, v in resumed.reference.state_dict().items()}
    assert all(torch.equal(initial[k], reference[k]) for k in initial)
    assert any(not torch.equal(initial[k], resumed.state_dict()[k]) for k in initial)
    assert not any(p.requires_grad for p in resumed.reference.parameters())
