"""A finished run's summary: one typed record, written once at the end of the run (launch/finish.py)
as RUN/summary.json and read back by `report`, `share` and `export`."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from gpt_core.config import GPTConfig
from gpt_core.files import write_json
from launch.errors import UserError

SUMMARY_NAME = "summary.json"


@dataclass
class RunSummary:
    stop_reason: str
    steps: int
    epochs_completed: int
    tokens: int  # real target tokens trained on
    best_step: int | None
    best_validation: dict | None  # loss, perplexity, accuracy, bits per byte, tokens, bytes of the best evaluation
    test: dict  # the same, on the test split, with the best weights
    samples: list[dict]  # {"prompt", "text"}
    throughput_tokens_per_s: float
    elapsed_seconds: float
    model: dict  # preset, parameters and the GPTConfig fields
    data: dict  # the token cache and its meta.json: stories read, dropped, split counts
    hardware: dict  # device, processes, mixed_precision, torch, python
    best_checkpoint: str
    config: dict  # the TrainConfig, as train_config.json holds it
    extra: dict = field(default_factory=dict)  # keys a newer version wrote, kept on a round trip

    def save(self, run_dir: Path) -> Path:
        """Write RUN/summary.json atomically (a temporary file renamed into place)."""
        path, data = Path(run_dir) / SUMMARY_NAME, dataclasses.asdict(self)
        data.update(data.pop("extra"))
        return write_json(path, data)

    @classmethod
    def load(cls, run_dir: Path) -> RunSummary:
        path = Path(run_dir) / SUMMARY_NAME
        if not path.is_file():
            raise UserError(f"{run_dir} has no summary.json; point at a finished run folder (its --output-dir)")
        try:
            data = json.loads(path.read_text())
            known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
            return cls(
                **{k: v for k, v in data.items() if k in known}, extra={k: v for k, v in data.items() if k not in known}
            )
        except (ValueError, TypeError) as e:
            raise UserError(f"{path} is not a run summary ({e}); run the training again to rewrite it") from None

    def model_config(self) -> GPTConfig:
        """The run's model, from the GPTConfig fields among `model`'s."""
        return GPTConfig.from_dict(self.model, ignore_unknown=True)

    def rows(self) -> list[tuple[str, str]]:
        """The run at a glance, as (label, value) rows: the report, the W&B report and the model card share them."""
        best, test, hardware = self.best_validation or {}, self.test or {}, self.hardware
        precision = "no (fp32)" if hardware["mixed_precision"] == "no" else hardware["mixed_precision"]
        return [
            ("parameters", f"{self.model['parameters']:,}"),
            ("stop reason", self.stop_reason),
            ("optimizer steps", str(self.steps)),
            ("tokens trained", f"{self.tokens:,}"),
            ("best validation loss / perplexity / accuracy / bits per byte", _metrics(best)),
            ("test loss / perplexity / accuracy / bits per byte", _metrics(test)),
            ("throughput (tokens/s)", f"{self.throughput_tokens_per_s:,.0f}"),
            ("hardware", f"{hardware['device']}, {hardware['processes']} process(es), mixed precision {precision}"),
            ("wall time", f"{self.elapsed_seconds / 60:.1f} min"),
        ]


def _fmt(value, digits=4):
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _metrics(m: dict) -> str:
    return (
        f"{_fmt(m.get('loss'))} / {_fmt(m.get('perplexity'), 2)} / {_fmt(m.get('accuracy'))} / "
        f"{_fmt(m.get('bits_per_byte'))}"
    )
