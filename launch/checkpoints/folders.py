"""Where a run's checkpoints live, and where a command finds weights:

<run>/checkpoints/step-0000120/   a resumable checkpoint (see saving.py)
<run>/checkpoints/best/           the best weights so far (best.old while it is being replaced)
"""

from __future__ import annotations

import re
from pathlib import Path

from gpt_core.weights import WEIGHTS_NAME
from launch.errors import UserError

STATE_NAME = "trainer_state.json"


def checkpoint_components(saved: dict) -> dict[str, dict]:
    """trainer_state.json by component ("trainer", "early_stopping"). Checkpoints written before the
    components had keys hold one flat dict, their keys side by side: each component reads its own there."""
    return saved if "trainer" in saved else {"trainer": saved, "early_stopping": saved}


STEP_DIR = re.compile(r"step-(\d+)")


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def run_dir_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint folder (step-N, best) belongs to."""
    return Path(checkpoint).parent.parent


def step_checkpoints(run_dir: Path) -> list[Path]:
    """Complete step checkpoints, oldest first (temporary folders never match the pattern)."""
    root = checkpoints_dir(run_dir)
    found = [p for p in root.glob("step-*") if p.is_dir() and STEP_DIR.fullmatch(p.name)] if root.is_dir() else []
    return sorted(found, key=lambda p: int(STEP_DIR.fullmatch(p.name).group(1)))


def find_best(run_dir: Path) -> Path | None:
    root = checkpoints_dir(run_dir)
    for candidate in (root / "best", root / "best.old"):
        if (candidate / WEIGHTS_NAME).is_file():
            return candidate
    return None


def resolve_weights(path: str | None) -> Path:
    """A weights folder from a folder that holds model.safetensors, a run folder (its best), or the
    newest run under ./runs when no path is given."""
    if path is None:
        runs = (
            sorted((p for p in Path("runs").glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
            if Path("runs").is_dir()
            else []
        )
        runs = [r for r in runs if find_best(r) or step_checkpoints(r)]
        if not runs:
            raise UserError("no checkpoint given and no run under ./runs; pass a run folder or a checkpoint folder")
        path = str(runs[-1])
    folder = Path(path)
    if (folder / WEIGHTS_NAME).is_file():
        return folder
    if not folder.exists():
        raise UserError(f"{folder} does not exist; pass a run folder (--output-dir of a run) or a checkpoint folder")
    best = find_best(folder)
    steps = step_checkpoints(folder)
    if best or steps:
        return best or steps[-1]
    raise UserError(f"{folder} holds no model.safetensors and no checkpoints/; pass a run or checkpoint folder")
