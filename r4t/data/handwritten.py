"""Hand-written, out-of-template OAR intents for the two built-in datasets: an evaluation-only query set.

The intents of `r4t.data.intents` are composed from facet lists under a handful of phrasing templates,
so a model trained and selected on them can score well just by learning the templates' vocabulary.
This module exposes a separate set of about a hundred intents per built-in dataset, written by hand the
way people actually type a request ("art teacher on a budget", "debugging code at 1am"), to measure how
a retriever does on phrasings it has never seen.

Rule: these intents are for final evaluation only. No stage may train on them, tune on them, or select a
model, checkpoint or hyperparameter by them; otherwise they stop measuring generalization. They live in
package data (``r4t/data/handwritten/<dataset>.txt``), one intent a line, ``#`` lines being comments.
"""

from __future__ import annotations

from importlib import resources

from r4t.errors import DataError

HANDWRITTEN_DATASETS: tuple[str, ...] = ("polyvore", "playlists")


def handwritten_queries(dataset: str) -> list[str]:
    """The hand-written evaluation intents of built-in `dataset`, in file order; [] for any other dataset.

    A built-in dataset whose file is missing from the installed package raises DataError rather than
    silently evaluating on nothing.
    """
    if dataset not in HANDWRITTEN_DATASETS:
        return []
    path = resources.files("r4t.data").joinpath("handwritten", f"{dataset}.txt")
    if not path.is_file():
        raise DataError(f"hand-written intents for {dataset!r} are missing from the package "
                        f"(r4t/data/handwritten/{dataset}.txt); reinstall r4t")
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]
