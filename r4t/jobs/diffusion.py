"""Stage 3: Ray Train fits the set denoiser on the synthesized targets, exports it, and compares it on held-out
queries with the teacher it distils (R4T-FOLM or the RLlib policy) and with no fan-out, quality and fan-out latency.

    python -m r4t.jobs.diffusion --config jobs/diffusion.yaml [key=value ...]

Writes under <run_dir>/<dataset>/<name>/: train/ (Ray Train checkpoints; a rerun resumes), metrics.jsonl,
model/ (EMA weights, config, manifest), eval.json and eval.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from r4t.catalog import PreparedCatalog
from r4t.config import DiffusionConfig, to_dict
from r4t.diffusion.checkpoint import CONFIG_FILE, EMA_WEIGHTS, MANIFEST_FILE, export_model, load_model
from r4t.diffusion.denoiser import DenoiserConfig, EDMDenoiser
from r4t.diffusion.samplers import check_sampler_range
from r4t.diffusion.train import fit_denoiser
from r4t.embed import TextEncoder
from r4t.errors import ConfigError, DataError
from r4t.eval.compare import compare_methods, eval_queries
from r4t.eval.report import comparison_tables
from r4t.policy.context import PromptContext, catalog_context
from r4t.index import MANIFEST_FILE as INDEX_MANIFEST
from r4t.io import atomic_path, check_manifest, read_json, sha256_file, write_json
from r4t.jobs.common import stage_catalogs, stage_main, synced_stage
from r4t.retrieve.load import teacher_fanout
from r4t.retrieve.methods import DiffusionFanout, NoFanout
from r4t.synth.targets import query_embeddings, read_manifest, read_targets, target_arrays
from r4t.synth.teacher import teacher_at


def targets_folder(cfg: DiffusionConfig, root: Path) -> Path:
    return root / cfg.targets if (root / cfg.targets).is_dir() else Path(cfg.targets)


def model_config(cfg: DiffusionConfig, dim: int, rows: int) -> DenoiserConfig:
    m = cfg.model
    if m.rows is not None and m.rows != rows:
        raise ConfigError(f"model.rows={m.rows}: the targets have L={rows} rows per set")
    return DenoiserConfig.from_preset(m.preset, dim, rows=rows, hidden=m.hidden, mlp=m.mlp, heads=m.heads,
                                      layers=m.layers, context_items=m.context_items,
                                      context_per_category=m.context_per_category, row_slots=m.row_slots)


def eval_sets(folder: Path, manifest: dict, n: int, context: PromptContext | None) -> tuple:
    """Fixed sets for the comparable loss: the validation split when synthesized, else the training split.
    → (targets, query embeddings, n_valid, padded context rows or None)."""
    split = "val" if "val" in manifest["splits"] else "train"
    table = read_targets(folder, split, ["target", "query_emb", "n_valid"]).slice(0, n)
    x, _ = target_arrays(table)
    q = query_embeddings(table)
    return (x, q, table.column("n_valid").to_numpy().astype(np.int64),
            None if context is None else context.padded_rows(q))


def training_context_rows(folder: Path, context: PromptContext) -> dict[str, list[int]]:
    """Each training query's padded context rows, by query id (the trainer looks them up per set)."""
    table = read_targets(folder, "train", ["query_id", "query_emb"])
    ids, first = np.unique(np.asarray(table.column("query_id").to_pylist(), dtype=object), return_index=True)
    rows = context.padded_rows(query_embeddings(table.take(first)))
    return {str(q): r.tolist() for q, r in zip(ids, rows)}


def finished_model(folder: Path, export: dict, model_cfg: DenoiserConfig) -> bool:
    """An exported model of exactly this training (same targets, model, settings): a rerun skips training."""
    if not (folder / MANIFEST_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
        return False
    manifest = read_json(folder / MANIFEST_FILE)
    return all(manifest.get(k) == v for k, v in export.items()) and read_json(folder / CONFIG_FILE) == \
        model_cfg.to_dict()


def train(cfg: DiffusionConfig, cat: PreparedCatalog, root: Path) -> tuple[EDMDenoiser, dict]:
    folder = targets_folder(cfg, root)
    manifest = read_manifest(folder)
    ident = manifest["identity"]
    index = cat.index.manifest
    check_manifest(ident, {**cat.fingerprint, "encoder_hash": index["weights_hash"]}, str(folder / "manifest.json"))
    model_cfg = model_config(cfg, ident["dim"], ident["rows"])
    # Before a long training: the sampler this job evaluates with stays where the training draws noise levels.
    check_sampler_range(cfg.sampler, {"sigma_data": manifest["sigma_data"], "train": to_dict(cfg.train)},
                        "this job's training (train.*)")
    out = root / cfg.name
    export = {"encoder": ident["encoder"], "encoder_hash": ident["encoder_hash"], "catalog_hash": ident["catalog_hash"],
              "target_space": {"oar": "retrieved item embeddings", "wscr": "sub-query embeddings"}[ident["task"]],
              "task": ident["task"], "index_manifest_sha256": sha256_file(root / "index" / INDEX_MANIFEST),
              "targets": str(folder), "policy_hash": ident["policy_hash"], "teacher": ident["teacher"],
              "train_steps": cfg.train.steps, "train": to_dict(cfg.train), "seed": cfg.seed}
    rows = manifest["splits"]["train"]["rows"]
    if rows < cfg.train.batch_size:
        raise DataError(f"{folder / 'manifest.json'}: {rows} training target sets, fewer than one batch "
                        f"(train.batch_size={cfg.train.batch_size}); synthesize more (synth.samples, "
                        "synth.max_queries) or lower train.batch_size")
    if cfg.resume and finished_model(out / "model", export, model_cfg):
        return load_model(out / "model")[0], manifest
    files = [str((folder / "targets" / "train" / name).resolve()) for name in manifest["splits"]["train"]["shards"]]
    context = catalog_context(cat, model_cfg.context_items, model_cfg.context_per_category)
    checkpoint = fit_denoiser(files, model_cfg, cfg.train, manifest["sigma_data"], cfg.workers, out, cfg.seed,
                              eval_sets(folder, manifest, cfg.train.eval_sets, context), out / "metrics.jsonl",
                              {"dataset": cat.name, "run": cfg.name}, cfg.resume,
                              None if context is None else training_context_rows(folder, context), cat.item_emb)
    model = EDMDenoiser(model_cfg, manifest["sigma_data"])
    with checkpoint.as_directory() as folder:  # downloaded first when the run directory is a URI
        model.load_state_dict(load_file(str(Path(folder) / EMA_WEIGHTS)))
    export_model(out / "model", model, export)
    return model.eval(), manifest


def evaluate(cfg: DiffusionConfig, cat: PreparedCatalog, encoder: TextEncoder, model: EDMDenoiser,
             teacher: str, progress: bool = True) -> dict:
    """The denoiser against no fan-out and the teacher its targets came from (`teacher`: identity.teacher)."""
    found = teacher_at(Path(teacher))
    if found is None:
        raise DataError(f"the teacher policy {teacher!r} named by the targets' manifest (identity.teacher) is not "
                        "there; run from the directory the synthesis ran in, or restore the teacher's run")
    methods = [NoFanout(cat.index, cat.item_emb),
               teacher_fanout(found, cat, encoder, cfg.policy, cfg.reward, cfg.eval.lm_temperature, cfg.seed),
               DiffusionFanout(model.to(cfg.sampler.device), cfg.sampler, cat.index, cat.item_emb, cfg.seed,
                               catalog_context(cat, model.cfg.context_items, model.cfg.context_per_category))]
    out = compare_methods(methods, cat, eval_queries(cat, cfg.eval, encoder), cfg.eval, cfg.reward,
                          cfg.eval.latency_batches, cfg.eval.latency_repeats, progress,
                          latency_seconds=cfg.eval.latency_seconds,
                          pair_latency_batches=cfg.eval.pair_latency_batches)
    return {**out, "sampler": to_dict(cfg.sampler), "threads": torch.get_num_threads()}


@synced_stage
def run(cfg: DiffusionConfig, progress: bool = True) -> dict:
    start = time.perf_counter()
    results = {}
    for spec, cat, root, encoder in stage_catalogs(cfg, progress):
        t0 = time.perf_counter()
        model, manifest = train(cfg, cat, root)
        train_seconds = time.perf_counter() - t0
        if not cfg.compare:
            results[spec.name] = {"train_seconds": train_seconds}
            continue
        ev = evaluate(cfg, cat, encoder, model, manifest["identity"]["teacher"], progress)
        ev["train_seconds"] = train_seconds
        out = root / cfg.name
        write_json(out / "eval.json", {"eval": to_dict(cfg.eval), **ev})
        with atomic_path(out / "eval.md") as tmp:
            tmp.write_text(f"# {spec.name}: {cfg.name} ({cfg.eval.split} split, sampler {cfg.sampler.method} "
                           f"{cfg.sampler.steps} steps, guidance {cfg.sampler.guidance})\n\n"
                           f"{comparison_tables({spec.name: ev})}\n")
        results[spec.name] = ev
    compared = {name: ev for name, ev in results.items() if "methods" in ev}
    return {"results": results, "table": comparison_tables(compared) if compared else "(comparison off: compare=false)",
            "seconds": time.perf_counter() - start}


def report(out: dict) -> str:
    return f"{out['table']}\ndiffusion stage finished in {out['seconds']:.0f} s"


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__, "diffusion", DiffusionConfig, run, report)


if __name__ == "__main__":
    sys.exit(main())
