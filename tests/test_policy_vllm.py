"""The vLLM backend against the transformers learner, on a real (tiny, CPU) vLLM engine shared by all tests."""

from __future__ import annotations

import sys

import pytest
import torch
from transformers import Qwen3ForCausalLM

from r4t.config import BootstrapConfig
from r4t.errors import ConfigError
from r4t.policy.backend import SamplingSettings
from r4t.policy.bootstrap import model_config, supervised_warm_start, train_tokenizer
from r4t.policy.engines import make_backend
from r4t.policy.model import load_policy, pack, save_policy, token_logprobs
from r4t.policy.vllm_backend import VLLMBackend

ITEMS = ["red leather ankle boots", "white canvas sneakers", "black suede loafers", "black leather tote bag",
         "quilted crossbody bag", "straw bucket bag", "floral print maxi dress", "red silk slip dress",
         "white lace sundress", "wide brim straw hat", "black wool fedora", "grey knitted beanie",
         "gold hoop earrings", "pearl stud earrings", "silver chain necklace", "navy running shoes"]
QUERIES = ["beach wedding guest", "winter commute", "summer festival", "office party", "rainy city weekend",
           "ski trip", "gallery opening", "first date"]
PROMPTS = [f"query: {q}\nsub-queries:\n" for q in QUERIES]
LONG_PROMPT = f"query: {', '.join(ITEMS)}\nsub-queries:\n"  # spans several 32-token KV blocks


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    """A tiny Qwen3 policy with a few supervised steps, so that some completions end with EOS within the budget.
    head_dim = 64 / 2 = 32: vLLM's CPU attention has no kernel for head_dim 16."""
    completions = ["\n".join(ITEMS[(i + j) % len(ITEMS)] for j in range(2)) for i in range(len(PROMPTS))]
    tokenizer = train_tokenizer(ITEMS + PROMPTS + completions, vocab_size=512)
    torch.manual_seed(0)
    cfg = BootstrapConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2,
                          num_kv_heads=1, max_positions=256, sft_epochs=20, sft_batch_size=8, sft_lr=1e-2)
    model = Qwen3ForCausalLM(model_config(cfg, tokenizer))
    supervised_warm_start(model, tokenizer, PROMPTS, completions, cfg, seed=0)
    return save_policy(model, tokenizer, tmp_path_factory.mktemp("policy") / "step0", {"step": 0})


@pytest.fixture(scope="module")
def engine(policy):
    # block_size=32 (CPU default 128), so that LONG_PROMPT fills whole blocks and is prefix-cached.
    return VLLMBackend(str(policy), max_model_len=256, block_size=32)


def learner_logprobs(model, tokenizer, rollouts, temperature):
    batch = pack([r.prompt_ids for r in rollouts], [r.completion_ids for r in rollouts], tokenizer.pad_token_id)
    with torch.no_grad():
        logp, _ = token_logprobs(model, batch, temperature)
    return [row[mask].tolist() for row, mask in zip(logp, batch.completion_mask.bool())]


def assert_logprobs_match(rollouts, expected):
    for r, lp in zip(rollouts, expected):
        assert len(r.logprobs) == len(r.completion_ids)
        torch.testing.assert_close(torch.tensor(r.logprobs), torch.tensor(lp), atol=1e-4, rtol=0)


def test_rollouts_grouped_by_prompt_with_tokenizer_ids(engine, policy):
    _, tokenizer = load_policy(policy)
    rollouts = engine.generate(PROMPTS[:3], SamplingSettings(n=4, temperature=1.0, max_new_tokens=10, seed=1))
    assert [r.prompt_index for r in rollouts] == [0] * 4 + [1] * 4 + [2] * 4
    eos = tokenizer.eos_token_id
    for r in rollouts:
        assert r.prompt_ids == tokenizer(PROMPTS[r.prompt_index], add_special_tokens=False).input_ids
        assert r.truncated == (r.completion_ids[-1] != eos)
        assert eos not in r.completion_ids[:-1]
        assert len(r.completion_ids) == 10 or not r.truncated
        assert r.text == tokenizer.decode(r.completion_ids, skip_special_tokens=True)
    assert {r.truncated for r in rollouts} == {True, False}  # both endings are exercised


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 1.0), (0.7, 0.8), (0.0, 1.0)])
def test_logprobs_equal_learner_recomputation(engine, policy, temperature, top_p):
    """log softmax(logits / T) over the whole vocabulary, also when top-p truncates the sampling distribution;
    greedy decoding (T = 0) reports log softmax(logits), as the transformers backend does."""
    model, tokenizer = load_policy(policy)
    n = 3 if temperature else 1  # both engines refuse n > 1 with greedy decoding
    settings = SamplingSettings(n=n, temperature=temperature, top_p=top_p, max_new_tokens=32, seed=2)
    rollouts = engine.generate(PROMPTS, settings)
    assert_logprobs_match(rollouts, learner_logprobs(model, tokenizer, rollouts, temperature or 1.0))


def test_same_seed_same_completions(engine):
    settings = SamplingSettings(n=3, temperature=1.0, max_new_tokens=16, seed=7)
    first, second = engine.generate(PROMPTS, settings), engine.generate(PROMPTS, settings)
    assert [r.completion_ids for r in first] == [r.completion_ids for r in second]
    other = engine.generate(PROMPTS, SamplingSettings(n=3, temperature=1.0, max_new_tokens=16, seed=8))
    assert [r.completion_ids for r in first] != [r.completion_ids for r in other]
    # distinct seeds per prompt and per sample: the samples are not copies of one another
    assert len({tuple(r.completion_ids) for r in first}) > len(PROMPTS)


def test_set_weights_matches_updated_learner(engine, policy):
    """The weight update the learner sends every RL step: vLLM then samples from, and scores with, the new policy."""
    old, tokenizer = load_policy(policy)
    new, _ = load_policy(policy)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    settings = SamplingSettings(n=2, temperature=0.7, max_new_tokens=32, seed=4)
    prompts = PROMPTS + [LONG_PROMPT]
    engine.generate(prompts, settings)  # LONG_PROMPT's KV blocks, computed with the old weights, are now cached
    try:
        engine.set_weights(new.state_dict())
        rollouts = engine.generate(prompts, settings)
        assert_logprobs_match(rollouts, learner_logprobs(new, tokenizer, rollouts, 0.7))
        stale = learner_logprobs(old, tokenizer, rollouts, 0.7)
        assert max(abs(a - b) for r, lp in zip(rollouts, stale) for a, b in zip(r.logprobs, lp)) > 1e-2
    finally:
        engine.set_weights(old.state_dict())
    back = engine.generate(prompts, settings)
    assert_logprobs_match(back, learner_logprobs(old, tokenizer, back, 0.7))


def test_set_weights_with_tied_embeddings(tmp_path):
    """Qwen3-4B and Gemma3-4B tie the output layer to the input embedding: the reload must update both."""
    tokenizer = train_tokenizer(ITEMS + PROMPTS, vocab_size=512)
    config = model_config(BootstrapConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=1,
                                          num_heads=2, num_kv_heads=1, max_positions=256), tokenizer)
    config.tie_word_embeddings = True
    torch.manual_seed(1)
    folder = save_policy(Qwen3ForCausalLM(config), tokenizer, tmp_path / "tied", {"step": 0})
    backend = VLLMBackend(str(folder), max_model_len=256)
    new, _ = load_policy(folder)
    with torch.no_grad():
        new.get_input_embeddings().weight.add_(0.5 * torch.randn_like(new.get_input_embeddings().weight))
    assert new.lm_head.weight is new.get_input_embeddings().weight
    backend.set_weights(new.state_dict())
    rollouts = backend.generate(PROMPTS, SamplingSettings(n=2, temperature=1.0, max_new_tokens=16, seed=5))
    assert_logprobs_match(rollouts, learner_logprobs(new, tokenizer, rollouts, 1.0))


def test_cpu_head_dim_without_vllm_kernel_is_a_config_error(tmp_path):
    tokenizer = train_tokenizer(ITEMS, vocab_size=512)
    cfg = BootstrapConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=1, num_heads=4,
                          num_kv_heads=2, max_positions=256)
    folder = save_policy(Qwen3ForCausalLM(model_config(cfg, tokenizer)), tokenizer, tmp_path / "p", {"step": 0})
    with pytest.raises(ConfigError, match="head_dim=16"):
        make_backend("vllm", str(folder))


def test_missing_vllm_is_a_config_error(policy, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` sees where the extra is not installed
    with pytest.raises(ConfigError, match="needs vLLM"):
        make_backend("vllm", str(policy))


def test_unknown_backend_is_a_config_error(policy):
    with pytest.raises(ConfigError, match="unknown generation backend"):
        make_backend("sglang", str(policy))
