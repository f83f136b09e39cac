"""The latent fan-out environment: a Gymnasium env for RLlib in which an episode is one query.

    observation: the query embedding q [d] (unit norm)
    action:      k rows of r coefficients in [-1, 1] (Box [k * r]); r4t.rl.latent turns them into k unit rows
    reward:      the RewardScorer's value for those rows as sub-query embeddings: the OAR composite
                 (0.6 ground + 0.2 div + 0.2 align), or, for task wscr, the coverage of the query's reference set
    episode:     one step (a contextual bandit); info carries every reward term that applies

The problem (training queries, references, basis, reward weights, where the index is) is written once by the
driver into a folder (`save_problem`) and read by each EnvRunner from there (`load_problem`, cached per process),
so no index or scorer is pickled across Ray.

`LatentFanoutVectorEnv` is the same environment, N copies stepped together: one RewardScorer call (one index
search) for all N actions instead of N, which is what bounds sampling on CPU. It follows Gymnasium's next-step
autoreset (an episode that ended is reset by the following step, whose action is ignored), as RLlib expects;
`make_latent_env` is the creator RLlib calls (with `num_envs` for the vectorized form).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
from safetensors.numpy import load_file, save_file

from r4t.config import RewardConfig
from r4t.embed import load_embeddings
from r4t.errors import DataError
from r4t.index import ItemIndex
from r4t.io import check_manifest, read_json, write_json
from r4t.rewards.scorer import RewardScorer
from r4t.rl.latent import LatentAction
from r4t.storage import fetch

PROBLEM_TENSORS, PROBLEM_FILE = "problem.safetensors", "problem.json"


@dataclass
class LatentProblem:
    query_emb: np.ndarray  # [Q, d] training queries
    references: list[list[str]] | None  # per query, the reference item ids (task wscr), else None
    scorer: RewardScorer
    latent: LatentAction

    def score(self, query_rows: np.ndarray, actions: np.ndarray) -> dict[str, np.ndarray]:
        """query_rows [B] indices into query_emb, actions [B, k * r] → the scorer's terms [B]."""
        q = self.query_emb[query_rows]
        refs = None if self.references is None else [self.references[i] for i in query_rows]
        return self.scorer.score_embeddings(q, self.latent.rows(q, actions), refs)


def save_problem(folder: Path, query_emb: np.ndarray, references: list[list[str]] | None, latent: LatentAction,
                 index_dir: Path, reward: RewardConfig, nprobe: int, ef_search: int) -> Path:
    """What an EnvRunner needs to rebuild the problem: tensors in safetensors, the rest in JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"query_emb": np.ascontiguousarray(query_emb, np.float32),
               "basis": np.ascontiguousarray(latent.basis, np.float32),
               "offsets": np.ascontiguousarray(latent.offsets, np.float32)}, str(folder / PROBLEM_TENSORS))
    write_json(folder / PROBLEM_FILE, {"index_dir": str(Path(index_dir).resolve()), "k": latent.k,
                                       "scale": latent.scale, "reward": vars(reward), "references": references,
                                       "nprobe": nprobe, "ef_search": ef_search})
    return folder


_PROBLEMS: dict[str, LatentProblem] = {}


def load_problem(folder: str | Path) -> LatentProblem:
    """The problem saved in `folder`, loaded once per process (an EnvRunner's vectorized envs share it)."""
    key = str(Path(folder).resolve())
    if key not in _PROBLEMS:
        meta = read_json(fetch(key) / PROBLEM_FILE)  # a URI run_dir: onto this EnvRunner's node first
        fetch(meta["index_dir"])
        tensors = load_file(str(Path(key) / PROBLEM_TENSORS))
        index = ItemIndex.load(meta["index_dir"], nprobe=meta["nprobe"], ef_search=meta["ef_search"])
        item_emb, emb_manifest = load_embeddings(meta["index_dir"])
        check_manifest(index.manifest, {k: emb_manifest.get(k) for k in ("encoder", "catalog_hash", "dim")},
                       f"{meta['index_dir']}: index manifest vs item embeddings")
        scorer = RewardScorer(None, index, item_emb, RewardConfig(**meta["reward"]))
        _PROBLEMS[key] = LatentProblem(tensors["query_emb"], meta["references"], scorer,
                                       LatentAction(meta["k"], tensors["basis"], meta["scale"],
                                                                  tensors["offsets"]))
    return _PROBLEMS[key]


class LatentFanoutEnv(gym.Env):
    """One query per episode; see the module docstring. `config["problem"]`: a folder written by save_problem
    (how RLlib builds it on an EnvRunner), or pass `problem=` directly."""

    metadata = {"render_modes": []}

    def __init__(self, config: dict | None = None, problem: LatentProblem | None = None):
        if problem is None:
            if not config or "problem" not in config:
                raise DataError("LatentFanoutEnv: env_config needs 'problem' (a folder written by save_problem)")
            problem = load_problem(config["problem"])
        self.problem = problem
        d = problem.query_emb.shape[1]
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (d,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (problem.latent.dim,), np.float32)
        self._query = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        n = len(self.problem.query_emb)
        self._query = int(options["query"]) if options and "query" in options else int(self.np_random.integers(n))
        return self.problem.query_emb[self._query].astype(np.float32), {"query": self._query}

    def step(self, action):
        scored = self.problem.score(np.array([self._query]), np.asarray(action, np.float32)[None])
        info = {name: float(scored[name][0]) for name in ("composite", "ground", "div_raw", "align", "recall", "hit")
                if np.isfinite(scored[name][0])}  # recall and hit only with a reference set
        obs = self.problem.query_emb[self._query].astype(np.float32)
        return obs, float(scored["reward"][0]), True, False, info


class LatentFanoutVectorEnv(gym.vector.VectorEnv):
    """`num_envs` latent fan-out episodes stepped together, scored in one batch (next-step autoreset)."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, config: dict | None = None, num_envs: int = 1, problem: LatentProblem | None = None):
        self.problem = problem if problem is not None else LatentFanoutEnv(config).problem
        self.num_envs = num_envs
        d = self.problem.query_emb.shape[1]
        self.single_observation_space = gym.spaces.Box(-1.0, 1.0, (d,), np.float32)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (self.problem.latent.dim,), np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self._rng = np.random.default_rng()
        self._queries = np.zeros(num_envs, np.int64)
        self._autoreset = np.zeros(num_envs, bool)

    def _draw(self, n: int) -> np.ndarray:
        return self._rng.integers(len(self.problem.query_emb), size=n)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._queries, self._autoreset[:] = self._draw(self.num_envs), False
        return self.problem.query_emb[self._queries].astype(np.float32), {}

    def step(self, actions):
        stepping = np.flatnonzero(~self._autoreset)
        rewards = np.zeros(self.num_envs, np.float64)
        if len(stepping):
            rewards[stepping] = self.problem.score(self._queries[stepping], np.asarray(actions)[stepping])["reward"]
        restarting = np.flatnonzero(self._autoreset)
        self._queries[restarting] = self._draw(len(restarting))
        terminated = ~self._autoreset  # every stepped episode ends (one step per query)
        self._autoreset = terminated.copy()
        obs = self.problem.query_emb[self._queries].astype(np.float32)
        return obs, rewards, terminated, np.zeros(self.num_envs, bool), {}


def make_latent_env(config: dict) -> gym.Env | gym.vector.VectorEnv:
    """RLlib's env creator: the vectorized env when RLlib asks for `num_envs` (vector entry point), else one env."""
    if "num_envs" in config:
        return LatentFanoutVectorEnv(config, int(config["num_envs"]))
    return LatentFanoutEnv(config)
