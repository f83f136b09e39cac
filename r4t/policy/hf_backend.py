"""Generation with a transformers model (CPU or GPU): sampling with temperature/top-p, n samples per prompt."""

from __future__ import annotations

import torch

from r4t.policy.backend import Rollout, SamplingSettings
from r4t.policy.model import load_policy, pack, token_logprobs

LOGPROB_CHUNK = 64  # sequences per log-prob forward pass, to bound the [B, T, vocab] logits in memory


def next_token(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """[B, vocab] logits → [B] token ids: argmax at temperature 0, else a draw from softmax(logits / temperature)
    restricted to the smallest set of most likely tokens whose probability reaches top_p."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p  # the mass before it already reaches top_p
        probs = probs.scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
    # Inverse-CDF draw: the first token whose cumulative probability exceeds u * total, u ~ U[0, 1). The same
    # distribution as torch.multinomial, at a tenth of its cost on CPU, where it was a sixth of decoding.
    cdf = probs.cumsum(dim=-1)
    total = cdf[:, -1:]
    u = torch.rand(total.shape, generator=generator, device=probs.device, dtype=cdf.dtype) * total
    return torch.searchsorted(cdf, torch.minimum(u, total.nextafter(torch.zeros_like(total))), right=True).squeeze(-1)


class TransformersBackend:
    def __init__(self, model_path: str, device: str = "cpu"):
        self.model, self.tokenizer = load_policy(model_path, device)
        self.model.eval()

    def set_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state_dict, strict=True)

    @torch.no_grad()
    def generate(self, prompts: list[str], settings: SamplingSettings) -> list[Rollout]:
        tok, s = self.tokenizer, settings
        prompt_ids = [tok(p, add_special_tokens=False).input_ids for p in prompts]
        rows = self._sample(prompt_ids, s)
        greedy = s.temperature == 0
        logprobs = self._logprobs([prompt_ids[p] for p, _, _ in rows], [c for _, c, _ in rows],
                                  1.0 if greedy else s.temperature) if s.logprobs else [[] for _ in rows]
        return [Rollout(prompt_index=p, prompt_ids=prompt_ids[p], completion_ids=c, logprobs=lp,
                        text=tok.decode(c, skip_special_tokens=True), truncated=cut)
                for (p, c, cut), lp in zip(rows, logprobs)]

    def _sample(self, prompt_ids: list[list[int]], s: SamplingSettings) -> list[tuple[int, list[int], bool]]:
        """n completions per prompt → (prompt index, ids up to and including EOS, cut at max_new_tokens), grouped
        by prompt. Each prompt runs once and its keys/values are repeated for its n samples (`generate` of
        transformers would run it n times): with items listed in the prompt, that prefill is most of the work."""
        model, pad, eos, n = self.model, self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, s.n
        device = model.device
        width = max(map(len, prompt_ids))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids], device=device)  # left-padded
        attention = (torch.arange(width, device=device)[None, :]
                     >= torch.tensor([width - len(p) for p in prompt_ids], device=device)[:, None]).long()
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=True,
                    logits_to_keep=1)
        cache = out.past_key_values
        cache.batch_repeat_interleave(n)
        logits = out.logits[:, -1].repeat_interleave(n, dim=0)
        attention = attention.repeat_interleave(n, dim=0)
        position = positions[:, -1:].repeat_interleave(n, dim=0)
        generator = torch.Generator(device=device).manual_seed(s.seed)
        done = torch.zeros(len(logits), dtype=torch.bool, device=device)
        steps = []
        for _ in range(s.max_new_tokens):
            token = torch.where(done, pad, next_token(logits, s.temperature, s.top_p, generator))
            steps.append(token)
            done |= token == eos
            if bool(done.all()) or len(steps) == s.max_new_tokens:
                break
            attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1)
            position = position + 1
            logits = model(input_ids=token[:, None], attention_mask=attention, position_ids=position,
                           past_key_values=cache, use_cache=True).logits[:, -1]
        rows = []
        for i, seq in enumerate(torch.stack(steps, dim=1).tolist()):
            end = seq.index(eos) + 1 if eos in seq else None
            rows.append((i // n, seq[:end], end is None))
        return rows

    def _logprobs(self, prompt_ids: list[list[int]], completion_ids: list[list[int]],
                  temperature: float) -> list[list[float]]:
        """Recomputed with the learner's own function, so sampler and learner agree on pi_old exactly."""
        out = []
        for start in range(0, len(prompt_ids), LOGPROB_CHUNK):
            batch = pack(prompt_ids[start:start + LOGPROB_CHUNK], completion_ids[start:start + LOGPROB_CHUNK],
                         self.tokenizer.pad_token_id)
            logp, _ = token_logprobs(self.model, batch, temperature)
            for row, mask in zip(logp.cpu(), batch.completion_mask.bool()):
                out.append(row[mask].tolist())
        return out
