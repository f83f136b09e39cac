"""RL checkpoints: Hugging Face policy folders under <out>/checkpoints/step-NNNNNN plus the optimizer state
(r4t.optim_state). A checkpoint counts only once its r4t.json exists (written last by `save_policy`, inside a
folder that is renamed into place), so a killed save is never resumed from.
"""

from __future__ import annotations

import re
from pathlib import Path

from r4t.policy.model import INFO_FILE

_STEP_DIR = re.compile(r"^step-(\d{6})$")


def checkpoint_dir(out_dir: Path, step: int) -> Path:
    return out_dir / "checkpoints" / f"step-{step:06d}"


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    found = [(int(m.group(1)), p) for p in (out_dir / "checkpoints").glob("step-*")
             if (m := _STEP_DIR.match(p.name)) and (p / INFO_FILE).is_file()]
    return max(found)[1] if found else None
