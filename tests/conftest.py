"""Shared fixtures: the real packaged MiniLM encoder and a tiny, obviously-categorized catalog indexed with it."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from r4t.serve.local import descendants

CATALOG: dict[str, list[str]] = {
    "shoes": [
        "red leather ankle boots",
        "white canvas low-top sneakers",
        "black suede penny loafers",
        "nude patent stiletto pumps",
        "brown leather hiking boots",
        "silver strappy high-heel sandals",
        "navy mesh running shoes",
        "tan espadrille wedges",
    ],
    "bags": [
        "black leather tote bag",
        "small quilted crossbody bag with chain strap",
        "canvas beach tote with rope handles",
        "brown leather backpack",
        "beaded evening clutch",
        "nylon belt bag",
        "straw bucket bag",
        "red patent leather shoulder bag",
    ],
    "dresses": [
        "floral print maxi dress",
        "little black cocktail dress",
        "red silk slip dress",
        "striped cotton shirt dress",
        "white lace sundress",
        "green satin evening gown",
        "denim pinafore dress",
        "knitted wool sweater dress",
    ],
    "hats": [
        "wide brim straw sun hat",
        "black wool fedora",
        "navy baseball cap",
        "grey knitted beanie",
        "tan bucket hat",
        "felt cloche hat",
        "panama hat with black band",
        "leather newsboy cap",
    ],
    "jewelry": [
        "gold hoop earrings",
        "pearl stud earrings",
        "silver chain necklace",
        "diamond tennis bracelet",
        "rose gold signet ring",
        "layered gold pendant necklace",
        "turquoise beaded bracelet",
        "sterling silver cuff bangle",
    ],
}


@dataclass(frozen=True)
class TinyCatalog:
    texts: list[str]  # item texts, row order
    ids: list[str]  # "i0", "i1", ...
    categories: list[str]  # category name per row
    emb: np.ndarray  # [N, d] float32, unit norm, from the `encoder` fixture
    index: "object"  # r4t.index.ItemIndex (Flat, inner product) over `emb`, with the texts' groups attached

    @property
    def category_codes(self) -> np.ndarray:
        names = sorted(set(self.categories))
        return np.array([names.index(c) for c in self.categories], dtype=np.int64)

    def row(self, text: str) -> int:
        return self.texts.index(text)


@pytest.fixture(scope="session")
def encoder():
    from r4t.embed import TextEncoder

    return TextEncoder()


@pytest.fixture(scope="session")
def tiny_catalog(encoder) -> TinyCatalog:
    from r4t.grounding import attach_texts
    from r4t.index import ItemIndex

    texts = [t for items in CATALOG.values() for t in items]
    categories = [c for c, items in CATALOG.items() for _ in items]
    ids = [f"i{i}" for i in range(len(texts))]
    emb = encoder.encode(texts)
    index = attach_texts(ItemIndex.build(emb, ids, "Flat", embed_manifest={**encoder.manifest, "catalog_hash": "test"}),
                         texts)
    return TinyCatalog(texts, ids, categories, emb, index)


# Near-identical items under different ids, as in the real catalogs ("Home Decor" six times): grounding must
# return each normalised text at most once. Every item is its own category, so category-diversity cannot hide it.
DUPLICATED = ["Home Decor", "home decor", "HOME  DECOR.", "Home Decor!", "  home decor ", "Home Decor",
              "hair casual beach", "Hair casual beach", "hair casual beach...", "scented candle",
              "wool throw blanket", "linen cushion cover", "ceramic vase", "straw beach hat", "white linen dress",
              "gold hoop earrings", "leather sandals"]


@pytest.fixture(scope="session")
def dup_catalog(encoder) -> TinyCatalog:
    from r4t.grounding import attach_texts
    from r4t.index import ItemIndex

    ids = [f"d{i}" for i in range(len(DUPLICATED))]
    emb = encoder.encode(DUPLICATED)
    index = attach_texts(ItemIndex.build(emb, ids, "Flat", embed_manifest={**encoder.manifest, "catalog_hash": "dup"}),
                         DUPLICATED)
    return TinyCatalog(DUPLICATED, ids, [f"c{i}" for i in range(len(ids))], emb, index)


@pytest.fixture(scope="session")
def tiny_source(tmp_path_factory: pytest.TempPathFactory, tiny_catalog) -> Path:
    """A ~40-item r4t dataset folder: reference sets in train and test, OAR and WSCR queries in both splits."""
    texts, cats = tiny_catalog.texts, tiny_catalog.categories
    items = [{"item_id": f"i{r}", "text": t, "category": c} for r, (t, c) in enumerate(zip(texts, cats))]
    by_cat: dict[str, list[str]] = {}
    for row in items:
        by_cat.setdefault(row["category"], []).append(row["item_id"])
    cat_names = sorted(by_cat)

    def outfit(j: int) -> list[str]:
        return [by_cat[c][(j + n) % len(by_cat[c])] for n, c in enumerate(cat_names)][:4]

    titles = [("beach day", "test"), ("evening out", "test"), ("winter walk", "train"), ("office look", "train"),
              ("garden party", "val")]
    sets = [{"set_id": f"s{j}", "query": t, "item_ids": outfit(j), "split": split}
            for j, (t, split) in enumerate(titles)]
    queries = [{"query_id": f"w{j}", "text": s["query"], "split": s["split"], "task": "wscr", "set_id": s["set_id"]}
               for j, s in enumerate(sets)]
    queries += [{"query_id": f"o{j}", "text": text, "split": split, "task": "oar", "set_id": None}
                for j, (text, split) in enumerate([("an outfit for a summer wedding", "test"),
                                                   ("what to wear on a hike", "test"),
                                                   ("accessories for a night out", "test"),
                                                   ("a cozy weekend look", "train")])]
    import pyarrow as pa

    from r4t.data.dataset import Dataset
    from r4t.data.schema import CATALOG_SCHEMA, QUERIES_SCHEMA, SETS_SCHEMA

    ds = Dataset("tiny", pa.Table.from_pylist(items, schema=CATALOG_SCHEMA),
                 pa.Table.from_pylist(sets, schema=SETS_SCHEMA), pa.Table.from_pylist(queries, schema=QUERIES_SCHEMA))
    return ds.save(tmp_path_factory.mktemp("tiny_source"))


TINY_K = 3  # sub-queries per fan-out in the tiny RL problems: short completions, fast tests
# Overrides that shrink the RL stage of a job config to the tiny problem (seconds, not minutes).
TINY_RL_OVERRIDES = ["policy.bootstrap.vocab_size=400", "policy.bootstrap.hidden_size=64",
                     "policy.bootstrap.intermediate_size=128", "policy.bootstrap.num_layers=2",
                     "policy.bootstrap.num_heads=2", "policy.bootstrap.num_kv_heads=1",
                     "policy.bootstrap.sft_epochs=10",
                     "policy.max_new_tokens=48", f"reward.k={TINY_K}", "rl.steps=2", "rl.prompts_per_step=2",
                     "rl.group_size=2", "rl.chunk_prompts=1", "rl.minibatches=2"]
# The pipeline (jobs/demo.yaml) at test size. A warm start tuned long enough (as tiny_policy) that most fan-outs are
# well formed: targets to train on.
TINY_DEMO = [*TINY_RL_OVERRIDES, "policy.bootstrap.sft_epochs=40", "policy.bootstrap.sft_batch_size=4",
             "policy.bootstrap.max_positions=128", "baselines.split=train", "baselines.k=3", "synth.samples=8",
             "synth.splits=[train]", "synth.queries_per_shard=4", "model.hidden=32", "model.mlp=64", "model.heads=2",
             "model.layers=1", "train.steps=20", "train.batch_size=8", "train.warmup_steps=5", "train.log_every=10",
             "train.checkpoint_every=10", "train.eval_sets=32", "train.shuffle_buffer=0", "sampler.steps=4",
             "methods.best_of=2", "eval.split=train", "eval.k=3", "eval.latency_batches=[1,2]",
             "eval.pair_latency_batches=[3]", "eval.latency_repeats=1", "eval.latency_seconds=0"]
TINY_QUERIES = ["beach vacation outfit", "winter office look", "summer wedding guest", "night out accessories",
                "rainy day walk", "garden party dress", "weekend hiking trip", "black tie evening"]


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory: pytest.TempPathFactory, tiny_catalog, encoder) -> Path:
    """A tiny Qwen3-architecture policy, bootstrapped (tokenizer + short SFT) on the tiny catalog with k=3.
    The warm start is deliberately short, so many of its completions are malformed: room for RL to improve."""
    from r4t.config import BootstrapConfig
    from r4t.policy.bootstrap import bootstrap_policy
    from r4t.policy.prompt import PLAIN_TEMPLATE

    cfg = BootstrapConfig(vocab_size=400, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2,
                          num_kv_heads=1, max_positions=128, sft_epochs=40, sft_lr=3e-3, sft_batch_size=4)
    return bootstrap_policy(tmp_path_factory.mktemp("policy") / "warm_start", tiny_catalog.texts, TINY_QUERIES,
                            encoder.encode(TINY_QUERIES), tiny_catalog.index, cfg, PLAIN_TEMPLATE, TINY_K,
                            seed=0, provenance={})


@pytest.fixture(scope="session")
def tiny_rl_source(tmp_path_factory: pytest.TempPathFactory, tiny_catalog) -> Path:
    """An r4t dataset whose OAR training queries are TINY_QUERIES (the queries the tiny policy was tuned on)."""
    import pyarrow as pa

    from r4t.data.dataset import Dataset
    from r4t.data.schema import CATALOG_SCHEMA, QUERIES_SCHEMA, SETS_SCHEMA

    items = [{"item_id": i, "text": t, "category": c}
             for i, t, c in zip(tiny_catalog.ids, tiny_catalog.texts, tiny_catalog.categories)]
    queries = [{"query_id": f"o{j}", "text": q, "split": "train", "task": "oar", "set_id": None}
               for j, q in enumerate(TINY_QUERIES)]
    ds = Dataset("tiny", pa.Table.from_pylist(items, schema=CATALOG_SCHEMA), SETS_SCHEMA.empty_table(),
                 pa.Table.from_pylist(queries, schema=QUERIES_SCHEMA))
    return ds.save(tmp_path_factory.mktemp("tiny_rl_source"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--full", action="store_true", help="also run the tests marked slow (left out of CI's run)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked slow are deselected (counted in the summary, not skipped) unless --full is given."""
    if config.getoption("--full"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session (jobs call ray.init only when Ray is not running yet). With the dashboard:
    Ray Train's placement-group cleaner asks the state API whether the train controller lives, and without it may
    decide the controller died and remove the workers' placement group mid-run."""
    import ray

    ray.init(num_cpus=2, include_dashboard=True, log_to_driver=False)
    yield
    ray.shutdown()


def find_process(title: str, ancestor: int) -> int | None:
    """The pid of a process whose title starts with `title` (Ray titles an actor's process "ray::Class.method" while
    that method runs) among `ancestor`'s descendants, or None."""
    for pid in descendants(ancestor):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(title.encode()):
                return pid
        except OSError:  # the process ended while being looked at
            continue
    return None


def _kill_first(title: str, stop: threading.Event, deadline: float) -> int | None:
    """SIGKILL the first process of this test seen under `title` → its pid; None once `stop` is set or the deadline
    passed."""
    while not stop.is_set() and time.monotonic() < deadline:
        if (pid := find_process(title, os.getpid())) is not None:
            os.kill(pid, signal.SIGKILL)
            return pid
        time.sleep(0.02)
    return None


@contextmanager
def killing(*titles: str, when: Callable[[], bool] = lambda: True,
            deadline_s: float = 300) -> Iterator[list[tuple[str, int]]]:
    """While the block runs, a thread waits until `when()` holds, then SIGKILLs, in turn, the first process seen under
    each title. Ray titles an actor's process "ray::Class.method" while that method runs, so "ray::SynthWorker.run"
    is a worker in the middle of a shard. Only processes this test started (its descendants) are candidates.
    Yields the (title, pid) of each kill."""
    killed: list[tuple[str, int]] = []
    stop, deadline = threading.Event(), time.monotonic() + deadline_s

    def run() -> None:
        while not when():
            if stop.wait(0.05):
                return
        for title in titles:
            pid = _kill_first(title, stop, deadline)
            if pid is None:
                return
            killed.append((title, pid))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield killed
    finally:
        stop.set()  # a title never seen: the block has ended, stop looking
        thread.join()
