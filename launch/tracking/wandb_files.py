"""A run's W&B files, read back without W&B's service: which runs a run folder holds, which keys
each logged and at which steps. `share` builds its report from them; RunLog finds what a W&B run
already holds before a resumed session logs to it again."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from launch.errors import UserError


@dataclass
class WandbRun:
    """One W&B run (one training session) as recorded on this disk."""

    run_id: str
    project: str
    entity: str
    folder: Path
    logged: dict[str, str] = field(default_factory=dict)  # history key -> "number" or its media type
    history: dict[int, set[str]] = field(default_factory=dict)  # step -> the keys logged at it


def wandb_records(path: Path):
    """The records of a `.wandb` file: W&B's transaction log, in LevelDB's log format (32 KiB
    blocks of checksummed fragments, after a 7-byte header), each a serialized `Record` proto."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise UserError(f"{path} is not a W&B run file; point at a run folder trained with --tracker wandb")
    block, position, pieces = 32768, 7, []
    while position + 7 <= len(data):
        left = block - position % block
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if left < 7 or (kind == 0 and length == 0):  # block trailer or padding
            position += left
            continue
        pieces.append(data[position + 7 : position + 7 + length])
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last fragment of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(pieces))
            pieces = []
            yield record


def read_wandb_run(folder: Path) -> WandbRun:
    files = sorted(folder.glob("*.wandb"))
    if not files:
        raise UserError(f"{folder} holds no .wandb file; the W&B run was not written (was it killed at start?)")
    run = None
    logged: dict[str, str] = {}
    history: dict[int, set[str]] = {}
    for record in wandb_records(files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "history":
            named = {(list(item.nested_key) or [item.key])[0]: item.value_json for item in record.history.item}
            keys = {k for k in named if not k.startswith("_")}
            step = json.loads(named["_step"]) if "_step" in named else None
            if step is not None:
                history.setdefault(step, set()).update(keys)
            for item in record.history.item:
                # A number is logged under one key ("train/loss"); media as the fields of one
                # (["curves", "_type"] -> "image-file", ["samples", "_type"] -> "table-file", ...).
                parts = list(item.nested_key) or [item.key]
                if len(parts) == 1:
                    logged.setdefault(parts[0], "number")
                elif parts[1] == "_type":
                    logged[parts[0]] = json.loads(item.value_json)
    if run is None:
        raise UserError(f"{files[0]} has no run record; the W&B run file is incomplete")
    return WandbRun(run.run_id, run.project, run.entity, folder, logged, history)


def wandb_runs(run_dir: Path) -> list[WandbRun]:
    """Every W&B session of the run folder (a resumed run has one per session), oldest first."""
    folders = [p for p in (Path(run_dir) / "wandb").glob("*run-*") if p.is_dir() and not p.is_symlink()]
    folders.sort(key=lambda p: p.name.split("run-", 1)[1])  # offline-run-DATE-ID and run-DATE-ID: by date
    if not folders:
        raise UserError(f"{run_dir} has no W&B run; train with --tracker wandb (WANDB_MODE=offline works) to share it")
    return [read_wandb_run(folder) for folder in folders]
