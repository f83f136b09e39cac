"""Denoiser artifacts, all without pickle.

Training checkpoint (inside a Ray Train checkpoint folder): model.safetensors, ema.safetensors, the optimizer
state (r4t.optim_state) and state.json (step, sigma_data, model config), written last.

Exported model (what serving and evaluation load): <folder>/model.safetensors (EMA weights), config.json (the
DenoiserConfig) and manifest.json (encoder, dimension, target space, sigma_data, catalog, index manifest hash,
the synthesis it was trained on). The folder is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from r4t.diffusion.denoiser import DenoiserConfig, EDMDenoiser
from r4t.errors import DataError
from r4t.io import atomic_folder, check_manifest, read_json, write_json
from r4t.optim_state import load_optimizer, save_optimizer

STATE_FILE, WEIGHTS, EMA_WEIGHTS = "state.json", "model.safetensors", "ema.safetensors"
CONFIG_FILE, MANIFEST_FILE = "config.json", "manifest.json"


def _tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_training_state(folder: Path, model: torch.nn.Module, ema: torch.nn.Module,
                        optimizer: torch.optim.Optimizer, state: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(_tensors(model), str(folder / WEIGHTS))
    save_file(_tensors(ema), str(folder / EMA_WEIGHTS))
    save_optimizer(optimizer, folder)
    write_json(folder / STATE_FILE, state)


def load_training_state(folder: Path, model: torch.nn.Module, ema: torch.nn.Module,
                        optimizer: torch.optim.Optimizer, expect: dict | None = None) -> dict:
    """Restore a training checkpoint; every `expect` field (model config, sigma_data) must match its state."""
    if not (folder / STATE_FILE).is_file():
        raise DataError(f"{folder}: no {STATE_FILE}; not a complete diffusion training checkpoint")
    state = read_json(folder / STATE_FILE)
    for key, value in (expect or {}).items():
        if state.get(key) != value:
            raise DataError(f"{folder / STATE_FILE}: the checkpoint to resume from has {key}={state.get(key)!r}, "
                            f"this run {value!r}; train under another `name=`, or remove that run's train/ folder "
                            "to start over")
    model.load_state_dict(load_file(str(folder / WEIGHTS)))
    ema.load_state_dict(load_file(str(folder / EMA_WEIGHTS)))
    load_optimizer(optimizer, folder)
    return state


def export_model(folder: Path, model: EDMDenoiser, manifest: dict) -> Path:
    """Write the model folder whole or not at all."""
    with atomic_folder(folder) as tmp:
        save_file(_tensors(model), str(tmp / WEIGHTS))
        write_json(tmp / CONFIG_FILE, model.cfg.to_dict())
        write_json(tmp / MANIFEST_FILE, {**manifest, "sigma_data": float(model.sigma_data), "dim": model.cfg.dim,
                                         "rows": model.cfg.rows})
    return folder


def load_model(folder: str | os.PathLike, expect: dict | None = None,
               device: str | torch.device = "cpu") -> tuple[EDMDenoiser, dict]:
    """Load an exported denoiser; every `expect` field (encoder, dim, catalog_hash, ...) must match its manifest."""
    folder = Path(folder)
    manifest = read_json(folder / MANIFEST_FILE)
    check_manifest(manifest, expect or {}, str(folder / MANIFEST_FILE))
    cfg = DenoiserConfig(**read_json(folder / CONFIG_FILE))
    model = EDMDenoiser(cfg, manifest["sigma_data"])
    try:
        model.load_state_dict(load_file(str(folder / WEIGHTS)))
    except (RuntimeError, OSError, SafetensorError) as e:  # a file cut short, or weights of another shape
        raise DataError(f"{folder / WEIGHTS}: unreadable or does not fit {folder / CONFIG_FILE} "
                        f"({str(e).splitlines()[0]})") from None
    return model.to(device).eval(), manifest
