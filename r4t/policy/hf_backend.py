"""Generation with transformers `generate` (CPU or GPU): sampling with temperature/top-p, n samples per prompt."""

from __future__ import annotations

import torch

from r4t.policy.backend import Rollout, SamplingSettings
from r4t.policy.model import load_policy, pack, token_logprobs

LOGPROB_CHUNK = 64  # sequences per log-prob forward pass, to bound the [B, T, vocab] logits in memory


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
        width = max(map(len, prompt_ids))
        pad = tok.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids], device=self.model.device)
        attention = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in prompt_ids])[:, None])
        greedy = s.temperature == 0
        torch.manual_seed(s.seed)
        out = self.model.generate(
            input_ids=input_ids, attention_mask=attention.long().to(self.model.device),
            do_sample=not greedy, temperature=None if greedy else s.temperature, top_p=None if greedy else s.top_p,
            top_k=None, num_return_sequences=s.n, max_new_tokens=s.max_new_tokens,
            pad_token_id=pad, eos_token_id=tok.eos_token_id)
        rows = []
        for i, seq in enumerate(out[:, width:].tolist()):
            ends = [j for j, t in enumerate(seq) if t == tok.eos_token_id]
            completion = seq[: ends[0] + 1] if ends else seq
            rows.append((i // s.n, completion, not ends))
        logprobs = self._logprobs([prompt_ids[p] for p, _, _ in rows], [c for _, c, _ in rows],
                                  1.0 if greedy else s.temperature) if s.logprobs else [[] for _ in rows]
        return [Rollout(prompt_index=p, prompt_ids=prompt_ids[p], completion_ids=c, logprobs=lp,
                        text=tok.decode(c, skip_special_tokens=True), truncated=cut)
                for (p, c, cut), lp in zip(rows, logprobs)]

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
