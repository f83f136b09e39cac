"""Training the set denoiser with Ray Train: DDP workers (gloo on CPU, NCCL on GPU) read the Parquet targets
through Ray Data, rank 0 keeps the EMA weights, logs and checkpoints; a restarted run resumes from the latest
checkpoint (model, EMA, optimizer, step).

The model is permutation-equivariant by construction (no positional encoding, row-wise maps and attention), so
its loss is the same for every ordering of a set's rows: shuffling rows in training, which the paper does,
would change nothing here, and the equivariance is tested instead.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from r4t.config import DiffusionTrainSettings
from r4t.diffusion.checkpoint import load_training_state, save_training_state
from r4t.diffusion.denoiser import DenoiserConfig, EDMDenoiser, canonical_order, context_tensors, denoising_loss
from r4t.diffusion.edm import training_sigma
from r4t.errors import DataError
from r4t.metrics import DashboardGauges, MetricsLog
from r4t.storage import fetch, publish, remove, storage_uri
from r4t.synth.targets import dense, valid_rows

COLUMNS = ["target", "query_emb", "n_valid"]
GAUGES = DashboardGauges("r4t_diffusion", ("loss", "eval_loss", "lr", "sets_per_s"), ("dataset", "run"),
                         "diffusion training")


def learning_rate(step: int, settings: DiffusionTrainSettings) -> float:
    """Linear warm-up, then constant."""
    return settings.lr * min(1.0, (step + 1) / max(settings.warmup_steps, 1))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """EMA with the decay warmed up as (1 + step) / (10 + step): early on the average follows the model
    instead of staying near the random initial weights for ~1 / (1 - decay) steps."""
    decay = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - decay)


@torch.no_grad()
def fixed_loss(model: EDMDenoiser, x0: torch.Tensor, query_emb: torch.Tensor, valid: torch.Tensor,
               seed: int = 0, items: torch.Tensor | None = None, items_valid: torch.Tensor | None = None) -> float:
    """The loss on fixed sets at fixed noise draws and noise levels log-spaced over [sigma_data/20, 20 sigma_data]:
    comparable across checkpoints and runs, unlike the noisy training loss."""
    g = torch.Generator().manual_seed(seed)
    n, sd = len(x0), float(model.sigma_data)
    sigma = sd * torch.logspace(math.log10(1 / 20), math.log10(20), 8)[torch.arange(n) % 8]
    noise = torch.randn(x0.shape, generator=g)
    return denoising_loss(model, x0, query_emb, sigma, noise, torch.zeros(n, dtype=torch.bool), valid, items,
                          items_valid).item()


def _batch_tensors(batch: dict, device, item_emb: np.ndarray | None) -> tuple:
    x0 = batch["target"].to(device, torch.float32)
    valid = torch.from_numpy(valid_rows(batch["n_valid"].numpy(), x0.shape[1])).to(device)
    rows = batch.get("context_rows")
    items, items_valid = context_tensors(None if rows is None else rows.numpy(), item_emb, device)
    return x0, batch["query_emb"].to(device, torch.float32), valid, items, items_valid


@dataclass(frozen=True)
class TrainJob:
    """What every Ray Train worker is given (pickled once by Ray Train)."""

    model: DenoiserConfig
    settings: DiffusionTrainSettings
    sigma_data: float
    seed: int
    threads: int  # torch threads per worker
    metrics_path: str  # absolute: Ray Train runs workers in a working directory of its own
    tags: dict  # dashboard labels (dataset, run)
    eval_sets: tuple  # x0, query_emb, n_valid and context-row arrays of the fixed sets `fixed_loss` scores
    context_rows: dict[str, list[int]] | None = None  # query id → its padded context rows (context items only)
    item_emb: Any = None  # an object ref to the catalog's embeddings [N, d] (context items only)

    @property
    def identity(self) -> dict:
        """What a checkpoint must have been trained with to be resumed."""
        return {"model": self.model.to_dict(), "sigma_data": self.sigma_data}


def train_loop(job: TrainJob) -> None:
    """Per worker: DDP training from the latest checkpoint (or from scratch), reporting metrics and checkpoints."""
    import ray
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(job.threads)
    s = job.settings
    torch.manual_seed(job.seed)  # identical initial weights on every rank
    model = EDMDenoiser(job.model, job.sigma_data)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    step = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            step = load_training_state(Path(folder), model, ema, optimizer, job.identity)["step"]
    device = ray.train.torch.get_device()
    ddp = ray.train.torch.prepare_model(model)
    ema.to(device)
    item_emb = None if job.item_emb is None else ray.get(job.item_emb)  # [N, d], shared memory
    eval_sets = [torch.as_tensor(a) for a in job.eval_sets[:3]]
    eval_x0, eval_q = eval_sets[0], eval_sets[1]
    eval_valid = torch.from_numpy(valid_rows(eval_sets[2], eval_x0.shape[1]))
    eval_items = context_tensors(job.eval_sets[3], item_emb)
    if model.cfg.row_slots:
        eval_x0, eval_valid = canonical_order(eval_x0, eval_valid, eval_q, *eval_items)
    log = MetricsLog(fetch(job.metrics_path), step, GAUGES) if rank == 0 else None
    # Noise draws differ per rank and per resumed segment, and repeat exactly for the same (seed, rank, start).
    g = torch.Generator().manual_seed(int(np.random.default_rng([job.seed, rank, step]).integers(2**62)))
    shard, collate = ray.train.get_dataset_shard("train"), make_collate(job.context_rows)
    per_worker = max(1, s.batch_size // world)
    losses, start, sets = [], time.perf_counter(), 0
    while step < s.steps:
        epoch_start = step
        for batch in shard.iter_torch_batches(batch_size=per_worker, drop_last=True, collate_fn=collate,
                                              local_shuffle_buffer_size=s.shuffle_buffer):
            x0, q, valid, items, items_valid = _batch_tensors(batch, device, item_emb)
            if model.cfg.row_slots:
                x0, valid = canonical_order(x0, valid, q, items, items_valid)
            B = len(x0)
            sigma = training_sigma(B, float(model.sigma_data), s.p_mean, s.p_std, g, uniform=s.sigma_uniform,
                                   sigma_min=s.sigma_min, sigma_max=s.sigma_max).to(device)
            noise = torch.randn(x0.shape, generator=g).to(device)
            drop = (torch.rand(B, generator=g) < s.cond_drop).to(device)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, s)
            loss = denoising_loss(ddp, x0, q, sigma, noise, drop, valid, items, items_valid)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.max_grad_norm)
            optimizer.step()
            update_ema(ema, model, s.ema_decay, step)
            step += 1
            losses.append(loss.item())
            sets += B * world
            if step % s.log_every == 0 or step % s.checkpoint_every == 0 or step == s.steps:
                record = {"step": step, "loss": float(np.mean(losses)), "lr": learning_rate(step - 1, s),
                          "sets_per_s": sets / (time.perf_counter() - start)}
                losses, start, sets = [], time.perf_counter(), 0
                if step % s.checkpoint_every == 0 or step == s.steps:
                    _report_checkpoint(rank, step, record, model, ema, optimizer, job,
                                       (eval_x0, eval_q, eval_valid, *eval_items), log)
                else:
                    if log:
                        log.write(record, job.tags)
                    ray.train.report(record)
            if step >= s.steps:
                break
        if step == epoch_start:  # an epoch without one full batch would loop forever
            raise DataError(f"rank {rank}: its share of the targets holds no full batch of {per_worker} sets "
                            f"(train.batch_size={s.batch_size} over {world} workers)")


def _report_checkpoint(rank, step, record, model, ema, optimizer, job, eval_sets, log) -> None:
    """Every rank reports (a report is a barrier); rank 0 attaches the checkpoint and the fixed-set EMA loss."""
    import ray.train

    if rank != 0:
        ray.train.report(record)
        return
    ema_cpu = copy.deepcopy(ema).cpu()
    x0, q, valid, items, items_valid = eval_sets
    record["eval_loss"] = fixed_loss(ema_cpu, x0, q, valid, 0, items, items_valid)
    log.write(record, job.tags)
    publish(log.path)  # rank 0 may run on another node than the driver
    with tempfile.TemporaryDirectory() as tmp:
        save_training_state(Path(tmp), model, ema, optimizer, {"step": step, **job.identity})
        ray.train.report(record, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def make_collate(context_rows: dict[str, list[int]] | None = None):
    """Ray Data's default conversion gives object arrays for fixed-size-list columns; build dense tensors. With
    `context_rows`, each set's query id becomes its padded context rows (`context_rows` [B, C])."""
    from ray.data.collate_fn import ArrowBatchCollateFn

    class TargetCollate(ArrowBatchCollateFn):
        def __call__(self, table) -> dict[str, torch.Tensor]:
            out = {name: torch.tensor(dense(table.column(name)))
                   for name in table.column_names if name != "query_id"}
            if context_rows is not None:
                out["context_rows"] = torch.tensor([context_rows[q] for q in table.column("query_id").to_pylist()])
            return out

    return TargetCollate()


def fit_denoiser(target_files: list[str], model_cfg: DenoiserConfig, settings: DiffusionTrainSettings,
                 sigma_data: float, workers, storage: Path, seed: int, eval_sets: tuple, metrics_path: Path,
                 tags: dict, resume: bool = True, context_rows: dict[str, list[int]] | None = None,
                 item_emb: np.ndarray | None = None):
    """Run (or resume) Ray Train over the target shards. → the latest ray.train.Checkpoint.

    Checkpoints go to <storage>/train/ (Ray Train's layout), straight to the remote side for a URI run_dir; a
    rerun with the same storage resumes from the latest one, and so does Ray Train itself when a worker dies
    (`workers.restarts` times). Multi-node training needs `storage` on a filesystem
    every node sees (ensure_ray checks a local run_dir). Paths handed to the workers are absolute: Ray Train runs
    them in a working directory of its own. A denoiser with context items needs `context_rows` (query id → its
    padded context rows, every training query) and the catalog's `item_emb`."""
    import ray
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    from r4t.errors import ConfigError, R4TError

    free = ray.cluster_resources().get("CPU", 0) - (0 if workers.use_gpu else workers.count * workers.cpus)
    if free < 1:
        raise ConfigError(f"workers.cpus={workers.cpus}: {workers.count} training workers leave {free:g} of "
                          f"{ray.cluster_resources().get('CPU', 0):g} CPUs, and Ray Data needs one to read the targets "
                          "(the run would wait forever); lower workers.cpus or workers.count")
    if not resume:
        remove(storage / "train")
    job = TrainJob(model_cfg, settings, sigma_data, seed, workers.torch_threads, str(metrics_path.resolve()), tags,
                   eval_sets)
    columns = COLUMNS
    if model_cfg.context_items:
        if context_rows is None or item_emb is None:
            raise ConfigError(f"model.context_items={model_cfg.context_items}: training needs each query's "
                              "context rows and the catalog's embeddings")
        job = replace(job, context_rows=context_rows, item_emb=ray.put(np.asarray(item_emb, np.float32)))
        columns = [*COLUMNS, "query_id"]
    data = ray.data.read_parquet([storage_uri(f) for f in target_files]).select_columns(columns)
    if settings.materialize:  # read once into the object store: epochs then cost no re-reading
        data = data.materialize()
    trainer = TorchTrainer(
        partial(train_loop, job), datasets={"train": data},
        scaling_config=ray.train.ScalingConfig(num_workers=workers.count, use_gpu=workers.use_gpu,
                                               resources_per_worker={"CPU": workers.cpus}),
        run_config=ray.train.RunConfig(storage_path=storage_uri(storage), name="train",
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
                                       failure_config=ray.train.FailureConfig(max_failures=workers.restarts)))
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as e:
        failures = getattr(e, "worker_failures", None) or {}
        cause = next(iter(failures.values()), e)
        raise R4TError(f"diffusion training failed: {type(cause).__name__}: {str(cause).splitlines()[0]}") from None
    if result.checkpoint is None:
        raise R4TError(f"diffusion training under {storage} ended without a checkpoint")
    return result.checkpoint
