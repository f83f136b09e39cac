"""Collate the RL runs under a run directory into Markdown tables (held-out evaluation and throughput).

    python scripts/rl_report.py runs/evidence

Reads <run_dir>/<dataset>/<run>/eval.json and metrics.jsonl as written by `python -m r4t.jobs.rl`. The
"composite (6:2:2)" column is recomputed with the default weights (0.6 ground + 0.2 div + 0.2 align) from the
term means over well-formed fan-outs, so ablations trained with other weights compare on one scale (the
composite is linear in the terms). "composite (all)" counts a malformed fan-out as 0, with the run's weights.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

WEIGHTS = {"ground": 0.6, "div": 0.2, "align": 0.2}
OAR = ("composite_all", "reward", "ground", "div", "div_raw", "align", "malformed", "category_share")


def cell(m: dict) -> str:
    return f"{m['mean']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}]"


def evaluation_tables(run_dir: Path) -> str:
    head = ("| dataset | run | policy | composite (6:2:2) | composite (all) | reward | ground | div | Vendi | align | "
            "malformed | cat. share | Recall@5K | Hit@5K |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for path in sorted(run_dir.glob("*/*/eval.json")):
        results = json.loads(path.read_text())["results"]
        for policy, ev in sorted(results.items(), key=lambda item: item[0] != "warm start"):
            comp = sum(w * ev["oar"][t]["mean"] for t, w in WEIGHTS.items())
            cells = ([f"{comp:.3f}"] + [cell(ev["oar"][m]) if m in ev["oar"] else "-" for m in OAR]
                     + [cell(ev["wscr"][m]) for m in ("recall", "hit")])
            lines.append(f"| {path.parts[-3]} | {path.parts[-2]} | {policy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def throughput_table(run_dir: Path) -> str:
    lines = ["| dataset | run | steps | fan-outs/step | median step s | gen tokens/s | scored fan-outs/s | "
             "learner s/step | total min |", "|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(run_dir.glob("*/*/metrics.jsonl")):
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        cfg = json.loads((path.parent / "config.json").read_text())["rl"]
        med = {k: float(np.median([r[k] for r in rows])) for k in
               ("step_seconds", "gen_tokens_per_s", "scored_fanouts_per_s", "learner_seconds")}
        lines.append(f"| {path.parts[-3]} | {path.parts[-2]} | {len(rows)} | "
                     f"{cfg['prompts_per_step'] * cfg['group_size']} | {med['step_seconds']:.2f} | "
                     f"{med['gen_tokens_per_s']:.0f} | {med['scored_fanouts_per_s']:.0f} | "
                     f"{med['learner_seconds']:.2f} | {sum(r['step_seconds'] for r in rows) / 60:.1f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    run_dir = Path(argv[0] if argv else "runs/evidence")
    print(f"## Held-out evaluation ({run_dir})\n\n{evaluation_tables(run_dir)}\n")
    print(f"## RL throughput ({run_dir})\n\n{throughput_table(run_dir)}\n")
    print(f"Reproduce: python scripts/rl_report.py {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
