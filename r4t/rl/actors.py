"""The three roles of the RL loop, as plain classes that the driver runs as Ray actors.

RolloutWorker generates with the latest weights; RewardWorker holds a RewardScorer and scores whole batches;
Learner owns the trainable policy, its optimizer and (for grpo_kl) the frozen reference. Each method is small
and named for what it does (`generate`, `score`, `update`, `state_dict`, `save`), and returns plain data.
"""

from __future__ import annotations

import time

import numpy as np
import ray
import torch

from r4t.config import RLSettings
from r4t.optim_state import load_optimizer, save_optimizer
from r4t.policy.backend import Rollout, SamplingSettings
from r4t.policy.engines import make_backend
from r4t.policy.model import load_policy, pack, save_policy, token_logprobs
from r4t.rl.losses import get_loss
from r4t.storage import fetch, publish


class RolloutWorker:
    def __init__(self, backend: str, model_path: str, device: str = "cpu", torch_threads: int = 1, version: int = 0):
        """version: how many learner updates the weights at model_path hold (the step they were saved at)."""
        torch.set_num_threads(torch_threads)
        self.backend = make_backend(backend, str(fetch(model_path)), device)
        self.version = version

    def generate(self, prompts: list[str], settings: SamplingSettings,
                 weights: tuple[int, ray.ObjectRef] | None = None) -> tuple[list[Rollout], float]:
        """weights: (version, a ref to the learner's state_dict) to sample with; fetched only when this worker holds
        another version. A worker that Ray restarted after a crash is back at its initial weights: this is how its
        retried call still samples exactly what the lost call would have (the seed is in `settings`)."""
        if weights is not None and weights[0] != self.version:
            self.backend.set_weights(ray.get(weights[1]))
            self.version = weights[0]
        start = time.perf_counter()
        rollouts = self.backend.generate(prompts, settings)
        return rollouts, time.perf_counter() - start


class RewardWorker:
    def __init__(self, scorer_factory, torch_threads: int = 1):
        """scorer_factory: a picklable callable building the RewardScorer inside this process (models load
        here, once, not in the driver)."""
        torch.set_num_threads(torch_threads)
        self.scorer = scorer_factory()

    def score(self, queries: list[str], completions: list[str],
              reference_sets: list[list[str] | None] | None) -> tuple[dict[str, np.ndarray], float]:
        start = time.perf_counter()
        out = self.scorer.score(queries, completions, reference_sets)
        return out, time.perf_counter() - start


def minibatch_indices(n: int, group_size: int, minibatches: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Rollout indices of each minibatch of one epoch: the n rollouts form n / group_size prompt groups (each
    group_size consecutive rollouts), which are put in a random order and split into `minibatches` equal parts.
    One minibatch is the whole batch as it is: the order of the rows of one minibatch does not change its loss.
    Returns `minibatches` int arrays of n / minibatches indices each."""
    if minibatches == 1:
        return [np.arange(n)]
    groups, rest = divmod(n, group_size)
    if rest or groups % minibatches:
        raise ValueError(f"{n} rollouts are not whole groups of rl.group_size={group_size} that split into "
                         f"rl.minibatches={minibatches} equal minibatches")
    order = rng.permutation(groups)[:, None] * group_size + np.arange(group_size)
    return np.split(order.reshape(-1), minibatches)


class Learner:
    def __init__(self, model_path: str, settings: RLSettings, device: str = "cpu", torch_threads: int = 1,
                 optimizer_from: str | None = None, reference_path: str | None = None):
        """reference_path: the frozen policy of grpo_kl (the run's initial policy, also when resuming)."""
        torch.set_num_threads(torch_threads)
        self.settings = settings
        for path in {model_path, reference_path or model_path}:  # a URI run_dir: bring them to this node
            fetch(path)
        self.model, self.tokenizer = load_policy(model_path, device)
        self.loss_fn = get_loss(settings.loss)
        self.reference = None
        if settings.loss == "grpo_kl":  # the frozen initial policy that the k3 term anchors to
            self.reference, _ = load_policy(reference_path or model_path, device)
            self.reference.requires_grad_(False).eval()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=settings.lr,
                                           weight_decay=settings.weight_decay)
        if optimizer_from:
            load_optimizer(self.optimizer, optimizer_from)

    def _loss_settings(self, batch) -> dict:
        s = self.settings
        if s.loss == "grpo_kl":
            with torch.no_grad():
                logp_ref, _ = token_logprobs(self.reference, batch, s.temperature)
            return {"clip_eps": s.clip_eps, "kl_beta": s.kl_beta, "aggregation": s.aggregation, "logp_ref": logp_ref}
        return {"clip_eps": s.clip_eps, "beta1": s.beta1, "beta2": s.beta2, "aggregation": s.aggregation}

    def update(self, rollouts: list[Rollout], advantages: np.ndarray, seed: int = 0) -> dict[str, float]:
        """`epochs` passes over the rollout batch, each in `minibatches` optimizer steps (RLSettings).

        rollouts: grouped by prompt, group_size consecutive rollouts per prompt; advantages: [len(rollouts)];
        seed: the minibatches' order. Returns the mean of the steps' stats, with `ratio_first` and
        `abs_log_ratio_first` from the first step alone: pi_theta is still the sampling policy there, so they
        measure how well the learner's log-probs agree with the sampler's.
        """
        s, start = self.settings, time.perf_counter()
        if len(advantages) != len(rollouts):
            raise ValueError(f"{len(advantages)} advantages for {len(rollouts)} rollouts")
        rng = np.random.default_rng(seed)
        self.model.train()
        steps = []
        for _ in range(s.epochs):
            for idx in minibatch_indices(len(rollouts), s.group_size, s.minibatches, rng):
                steps.append(self._step([rollouts[i] for i in idx], advantages[idx]))
        self.model.eval()
        out = {key: float(np.mean([step[key] for step in steps])) for key in steps[0]}
        out["ratio_first"], out["abs_log_ratio_first"] = steps[0]["ratio_mean"], steps[0]["abs_log_ratio"]
        out["learner_seconds"] = time.perf_counter() - start
        return out

    def _step(self, rollouts: list[Rollout], advantages: np.ndarray) -> dict[str, float]:
        """One optimizer step on a minibatch (advantages: [len(rollouts)]) → its loss stats, loss, grad norm and
        token-mean entropy."""
        s = self.settings
        batch = pack([r.prompt_ids for r in rollouts], [r.completion_ids for r in rollouts],
                     self.tokenizer.pad_token_id, [r.logprobs for r in rollouts])
        mask = batch.completion_mask.to(self.model.device)
        logp, entropy = token_logprobs(self.model, batch, s.temperature, with_entropy=True)
        adv = torch.as_tensor(advantages, dtype=torch.float32, device=mask.device)
        loss, stats = self.loss_fn(logp, batch.logp_old.to(mask.device), adv, mask, **self._loss_settings(batch))
        self.optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.max_grad_norm)
        self.optimizer.step()
        tokens = mask.sum().clamp(min=1)
        return {**stats, "loss": loss.item(), "grad_norm": grad_norm.item(),
                "entropy": ((entropy.detach() * mask).sum() / tokens).item()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def save(self, folder: str, info: dict) -> str:
        """A Hugging Face folder (safetensors + tokenizer) with the optimizer state, for an exact resume."""
        save_policy(self.model, self.tokenizer, folder, info, lambda tmp: save_optimizer(self.optimizer, tmp))
        publish(folder)
        return folder

    def optimizer_state(self) -> dict:
        return self.optimizer.state_dict()

