"""Where the numbers go: a local metrics.jsonl always, plus W&B or TensorBoard through Accelerate's
trackers. Everything is written from the main process only.

Secrets never leave the environment: we log our own config dataclasses, never os.environ, and
`scrub` removes anything that looks like a key before a dict is written or sent.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from gpt_core.files import write_atomically
from launch.errors import UserError

# "hf_token" or "auth_token" is a secret; "tokens" and "max_tokens" are counts.
SECRET_KEYS = re.compile(r"(api[_-]?key|secret|password|passwd|(^|[_-])token$)", re.IGNORECASE)


def scrub(data):
    """A copy of `data` with secret-looking keys and the current WANDB_API_KEY value masked."""
    api_key = os.environ.get("WANDB_API_KEY")
    if isinstance(data, dict):
        return {k: "***" if SECRET_KEYS.search(str(k)) else scrub(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [scrub(v) for v in data]
    if isinstance(data, str) and api_key and api_key in data:
        return data.replace(api_key, "***")
    return data


def flatten(config: dict, prefix: str = "") -> dict:
    """{"data": {"source": x}} -> {"data.source": x}, with values TensorBoard's hparams accept."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


METRICS_NAME = "metrics.jsonl"


def read_metrics(run_dir: Path, on_torn_line=None) -> list[dict]:
    """The records of RUN/metrics.jsonl. A last line cut short (a kill in the middle of a write) is
    dropped, and `on_torn_line` told; a bad line anywhere else is corruption, and an error."""
    path = Path(run_dir) / METRICS_NAME
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number < len(lines):
                raise UserError(f"{path}:{number}: not valid JSON ({e.msg}); fix or delete that line") from None
            if on_torn_line is not None:
                on_torn_line(f"metrics: dropped the last line of {path}, cut short by an interrupted write")
    return records


TRACKER_NAME = "tracker.json"  # the run's W&B run id: every session of the run logs to that one run


class RunLog:
    """metrics.jsonl plus the Accelerate trackers, from the main process.

    One run is one tracker run, however many sessions it takes: the W&B run id is kept in the run
    folder and each session resumes it, and TensorBoard writes into the same folder. A session that
    starts from a checkpoint redoes the steps an interrupted one logged after it, so each step is in
    every history once:
      - metrics.jsonl drops the interrupted attempt's records after the checkpoint, then logs anew;
      - TensorBoard is told to purge them (SummaryWriter's purge_step), then they are logged anew;
      - W&B keeps a step's history row for good (its steps only increase), so a record is not sent
        again when the run's own W&B files show its keys at its step already: those values are the
        ones an exact resume computes.
    """

    def __init__(
        self,
        accelerator,
        run_dir: Path,
        tracker: str,
        project: str,
        run_name: str,
        config: dict,
        resumed_step: int | None,
    ):
        self.accelerator, self.tracker = accelerator, tracker
        self.path = Path(run_dir) / METRICS_NAME
        self.held: dict[int, set[str]] = {}  # what the W&B run already holds: step -> keys
        if accelerator.is_main_process and self.path.exists():
            records = read_metrics(run_dir, on_torn_line=accelerator.print)
            # Drop what an interrupted attempt logged after the checkpoint this session starts from
            # (everything, when it starts from scratch): it is about to be redone.
            kept = [] if resumed_step is None else [r for r in records if r.get("step", 0) <= resumed_step]
            if len(kept) < len(records):
                accelerator.print(
                    f"metrics: dropped {len(records) - len(kept)} record(s) logged after the "
                    f"{'checkpoint' if kept else 'start'} by the interrupted attempt"
                )
            write_atomically(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        if tracker != "none":
            init_kwargs = {"tensorboard": {"purge_step": 0 if resumed_step is None else resumed_step + 1}}
            if tracker == "wandb":
                run_id = _wandb_id(Path(run_dir)) if accelerator.is_main_process else None
                self.held = _wandb_history(Path(run_dir), run_id) if accelerator.is_main_process else {}
                init_kwargs = {"wandb": {"name": run_name, "dir": str(run_dir), "id": run_id, "resume": "allow"}}
            config = scrub(config) if tracker == "wandb" else flatten(scrub(config))
            accelerator.init_trackers(project, config=config, init_kwargs=init_kwargs)

    def log(self, record: dict) -> None:
        """One record: {"kind": "train"|"eval"|..., "step": optimizer step, ...metrics}."""
        if not self.accelerator.is_main_process:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tracker != "none":
            prefix = record["kind"]
            values = {
                f"{prefix}/{k}": v
                for k, v in record.items()
                if k not in ("kind", "step") and isinstance(v, (int, float))
            }
            if not set(values) <= self.held.get(record["step"], set()):  # W&B has them at this step already
                self.accelerator.log(values, step=record["step"])

    def log_samples(self, samples: list[dict], step: int) -> None:
        if self.tracker == "wandb" and self.accelerator.is_main_process:
            rows = [[s["prompt"], s["text"]] for s in samples]
            self.accelerator.get_tracker("wandb").log_table(
                "samples", columns=["prompt", "story"], data=rows, step=step
            )
        elif self.tracker == "tensorboard" and self.accelerator.is_main_process:
            writer = self.accelerator.get_tracker("tensorboard", unwrap=True)
            for i, s in enumerate(samples):
                writer.add_text(f"samples/{i}", f"**{s['prompt']}** {s['text']}", step)

    def log_image(self, name: str, png: Path, step: int) -> None:
        if self.tracker == "none" or not self.accelerator.is_main_process:
            return
        import matplotlib.image

        image = matplotlib.image.imread(str(png))[..., :3]
        if self.tracker == "wandb":
            self.accelerator.get_tracker("wandb").log_images({name: [image]}, step=step)
        else:
            self.accelerator.get_tracker("tensorboard", unwrap=True).add_image(name, image, step, dataformats="HWC")

    def log_summary(self, summary: dict) -> None:
        if self.tracker == "wandb" and self.accelerator.is_main_process:
            run = self.accelerator.get_tracker("wandb", unwrap=True)
            for key, value in scrub(summary).items():
                run.summary[key] = value

    def log_artifact(self, folder: Path, name: str) -> None:
        if self.tracker == "wandb" and self.accelerator.is_main_process:
            import wandb

            artifact = wandb.Artifact(name, type="model", description="best checkpoint (safetensors + config.json)")
            artifact.add_dir(str(folder))
            self.accelerator.get_tracker("wandb", unwrap=True).log_artifact(artifact)

    def finish(self) -> None:
        if self.tracker != "none":
            self.accelerator.end_training()


def _wandb_id(run_dir: Path) -> str:
    """The run's W&B id, made at its first session and kept in RUN/tracker.json (main process)."""
    path = run_dir / TRACKER_NAME
    if path.is_file():
        return json.loads(path.read_text())["wandb_id"]
    import secrets

    run_id = secrets.token_hex(6)  # W&B ids: lowercase letters and digits
    path.write_text(json.dumps({"wandb_id": run_id}) + "\n")
    return run_id


def _wandb_history(run_dir: Path, run_id: str) -> dict[int, set[str]]:
    """step -> keys, over every earlier session of W&B run `run_id` in the run folder."""
    import struct

    from google.protobuf.message import DecodeError

    from .wandb_files import read_wandb_run

    held: dict[int, set[str]] = {}
    for folder in sorted((run_dir / "wandb").glob(f"*run-*-{run_id}")):
        try:
            run = read_wandb_run(folder)
        except (UserError, ValueError, struct.error, DecodeError):  # a session killed early: cut-short files
            continue
        for step, keys in run.history.items():
            held.setdefault(step, set()).update(keys)
    return held
