"""RL checkpoints: Hugging Face policy folders under <out>/checkpoints/step-NNNNNN plus the optimizer state.

The optimizer state is stored without pickle: its tensors in `optimizer.safetensors`, its scalars and
parameter groups in `optimizer.json`. A checkpoint counts only once its r4t.json exists (written last by
`save_policy`, inside a folder that is renamed into place), so a killed save is never resumed from.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from r4t.errors import DataError
from r4t.io import read_json, write_json
from r4t.policy.model import INFO_FILE

OPT_TENSORS, OPT_META = "optimizer.safetensors", "optimizer.json"
_STEP_DIR = re.compile(r"^step-(\d{6})$")


def checkpoint_dir(out_dir: Path, step: int) -> Path:
    return out_dir / "checkpoints" / f"step-{step:06d}"


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    found = [(int(m.group(1)), p) for p in (out_dir / "checkpoints").glob("step-*")
             if (m := _STEP_DIR.match(p.name)) and (p / INFO_FILE).is_file()]
    return max(found)[1] if found else None


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
