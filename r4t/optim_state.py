"""Optimizer state without pickle: tensors in `optimizer.safetensors`, scalars and parameter groups in
`optimizer.json`. Used by every stage that resumes training (RL learner, diffusion)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from r4t.errors import DataError
from r4t.io import read_json, write_json

OPT_TENSORS, OPT_META = "optimizer.safetensors", "optimizer.json"


def save_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, slots in state["state"].items():
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{name}"] = value
    save_file(tensors, str(folder / OPT_TENSORS))
    write_json(folder / OPT_META, {"param_groups": state["param_groups"], "scalars": scalars})


def load_optimizer(optimizer: torch.optim.Optimizer, folder: str | Path) -> None:
    folder = Path(folder)
    if not (folder / OPT_TENSORS).is_file() or not (folder / OPT_META).is_file():
        raise DataError(f"{folder}: no optimizer state ({OPT_TENSORS}, {OPT_META}) to resume from")
    meta = read_json(folder / OPT_META)
    for group in meta["param_groups"]:  # JSON stored tuples (Adam's betas) as lists
        group.update({k: tuple(v) for k, v in group.items() if isinstance(v, list) and k != "params"})
    state: dict[int, dict] = {}
    for key, value in [*load_file(str(folder / OPT_TENSORS)).items(), *meta["scalars"].items()]:
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (ValueError, KeyError) as e:
        raise DataError(f"{folder / OPT_META}: optimizer state does not fit this model ({e})") from None
