"""A sweep's search space: a small YAML file naming `train` settings and the values to try.

    lr: {low: 1.0e-4, high: 1.0e-2, log: true}     # a float range, sampled on a log scale
    warmup_steps: {low: 0, high: 200, step: 50}     # an integer range (the setting's type decides)
    dropout: [0.0, 0.1]                             # a list: one of these values
    batch_size: {choices: [4, 8, 16], keep_tokens_per_step: true}   # --grad-accum follows

Keys are train's settings as fields (`warmup_steps`) or flags (`--warmup-steps`). Everything is
checked when the file is read, before any study or data work: an unknown setting, one that is not
a training choice (paths, resume, tracking), a range upside down, a log range through zero, a value
of the wrong type.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt_core.errors import first_line
from launch.errors import UserError

from .config import TrainConfig, batch_size_on
from .fields import flag_of

# train settings that say where and how a run is kept, not how it trains: a sweep sets them itself
NOT_SWEPT = {
    "data",
    "output_dir",
    "resume",
    "overwrite",
    "allow_changes",
    "max_minutes",
    "stop_after_steps",
    "run_name",
    "tracker",
    "project",
    "log_checkpoint",
    "init_from",
    "prompts",
    "profile_steps",
}


def sweepable_fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(TrainConfig) if f.name not in NOT_SWEPT}


def _number_type(name: str) -> str | None:
    """ "int" or "float" for a setting that takes numbers; None for one that takes words or flags."""
    hint = typing.get_type_hints(TrainConfig)[name]
    kinds = {hint, *typing.get_args(hint)}
    return "float" if float in kinds else "int" if int in kinds else None


@dataclass(frozen=True)
class Dimension:
    """One setting's values: a range (low, high, log, step) or a list of choices."""

    name: str
    kind: str  # "float", "int" or "choice"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    keep_tokens_per_step: bool = False  # batch_size only: --grad-accum makes up the difference

    def suggest(self, trial) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)


@dataclass(frozen=True)
class SearchSpace:
    dimensions: tuple[Dimension, ...]
    source: dict  # the file's content, as read: stored with the study to compare later workers' spaces

    def suggest(self, trial, base: TrainConfig) -> dict[str, Any]:
        """This trial's settings {field: value}, sampled from `trial`, with --grad-accum kept at the
        base's tokens per step where batch_size asks it."""
        values = {d.name: d.suggest(trial) for d in self.dimensions}
        if any(d.keep_tokens_per_step for d in self.dimensions):
            values["grad_accum"] = self.rows_per_update(base) // values["batch_size"]
        return values

    def check(self, base: TrainConfig) -> None:
        """What only the fixed flags can tell: every batch size that keeps the tokens per step divides
        the rows per update (checked before the study starts, not trial by trial)."""
        keep = next((d for d in self.dimensions if d.keep_tokens_per_step), None)
        if keep is None:
            return
        rows = self.rows_per_update(base)
        wrong = [c for c in keep.choices if not isinstance(c, int) or rows % c]
        if wrong:
            raise UserError(
                f"SPACE: batch_size {wrong} do not divide the {rows} rows per update of the fixed flags "
                "(--batch-size x --grad-accum); choose batch sizes that do"
            )

    @staticmethod
    def rows_per_update(base: TrainConfig) -> int:
        from launch.runtime.devices import resolve_device

        batch = batch_size_on(resolve_device().type, base.batch_size)
        return batch * base.grad_accum


def _number(value, name: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{name}: {what} must be a number, got {value!r}; e.g. {{low: 1.0e-4, high: 1.0e-2}}")
    return float(value)


def _dimension(name: str, spec, where: str) -> Dimension:
    kind = _number_type(name)
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, dict):
        raise UserError(f"{where}: {name} must be a list of values or a range {{low:, high:}}; got {spec!r}")
    unknown = set(spec) - {"low", "high", "log", "step", "choices", "keep_tokens_per_step"}
    if unknown:
        raise UserError(f"{where}: {name} has unknown keys {sorted(unknown)}; use low, high, log, step or choices")
    for switch in ("log", "keep_tokens_per_step"):
        if switch in spec and not isinstance(spec[switch], bool):
            raise UserError(f"{where}: {name}'s {switch} must be true or false (no quotes), got {spec[switch]!r}")
    if spec.get("keep_tokens_per_step") and name != "batch_size":
        raise UserError(f"{where}: keep_tokens_per_step applies to batch_size only, not {name}")
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: {name}'s choices must be a non-empty list")
        for choice in choices:  # each as train would take it: type and bounds
            try:
                dataclasses.replace(TrainConfig(), **{name: choice})
            except (UserError, TypeError, ValueError) as e:
                raise UserError(f"{where}: {name} choice {choice!r} is not a valid value ({e})") from None
        return Dimension(
            name, "choice", choices=tuple(choices), keep_tokens_per_step=bool(spec.get("keep_tokens_per_step"))
        )
    if kind is None:
        raise UserError(f"{where}: {name} does not take a number; give it a list of values")
    if "low" not in spec or "high" not in spec:
        raise UserError(f"{where}: {name} needs both low and high (or a list of values)")
    low, high = _number(spec["low"], name, "low"), _number(spec["high"], name, "high")
    if low > high:
        raise UserError(f"{where}: {name}'s range is upside down (low {spec['low']} > high {spec['high']}); swap them")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise UserError(f"{where}: {name} on a log scale needs low > 0, got {spec['low']}")
    step = spec.get("step")
    if step is not None and (_number(step, name, "step") <= 0 or log):
        raise UserError(f"{where}: {name}'s step must be positive and cannot go with log")
    if kind == "int" and not all(float(v).is_integer() for v in (low, high, step or 1)):
        raise UserError(f"{where}: {name} takes whole numbers; got low {spec['low']}, high {spec['high']}")
    for bound in (low, high):  # the ends are values train must accept
        try:
            dataclasses.replace(TrainConfig(), **{name: int(bound) if kind == "int" else bound})
        except (UserError, ValueError) as e:  # ValueError: the model's own check (ConfigError)
            raise UserError(f"{where}: {name}'s range reaches a value train refuses ({e})") from None
    return Dimension(name, kind, low, high, log, None if step is None else float(step))


def parse_space(data, where: str) -> SearchSpace:
    if not isinstance(data, dict) or not data:
        raise UserError(
            f"{where} must map train settings to values, e.g. `lr: {{low: 1.0e-4, high: 1.0e-2, log: true}}`"
        )
    fields, dimensions, keys = sweepable_fields(), [], {}
    for key, spec in data.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name in keys:
            raise UserError(f"{where}: {name} is given twice ({keys[name]!r} and {key!r}); keep one")
        keys[name] = key
        if name not in fields:
            every = {f.name for f in dataclasses.fields(TrainConfig)}
            if name in every:
                raise UserError(f"{where}: {key} is not a training choice a sweep varies; give it as a fixed flag")
            near = difflib.get_close_matches(name, fields, n=1)
            hint = f"did you mean {near[0]}?" if near else f"one of {', '.join(sorted(fields))}"
            raise UserError(f"{where}: unknown setting {key!r}; {hint}")
        dimensions.append(_dimension(name, spec, where))
    if any(d.keep_tokens_per_step for d in dimensions) and any(d.name == "grad_accum" for d in dimensions):
        raise UserError(
            f"{where}: batch_size keeps the tokens per step through grad_accum, so grad_accum cannot vary too"
        )
    return SearchSpace(tuple(dimensions), data)


def _unique_keys_loader(where: str):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps
    the last silently, and a range would be dropped without a word)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise UserError(f"{where}: {key} is given twice (line {key_node.start_mark.line + 1}); keep one")
                seen.add(key)
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def load_space(path: str) -> SearchSpace:
    import yaml

    file = Path(path)
    try:
        data = yaml.load(file.read_text(), Loader=_unique_keys_loader(f"SPACE {path}"))  # a SafeLoader
    except FileNotFoundError:
        raise UserError(
            f"SPACE {path} does not exist; write the search space as YAML (see gpt-launch sweep --help)"
        ) from None
    except (IsADirectoryError, UnicodeDecodeError):
        raise UserError(f"SPACE {path} is not a YAML file; pass the search space file") from None
    except yaml.YAMLError as e:
        raise UserError(f"SPACE {path} is not valid YAML ({first_line(e)}); fix the file") from None
    return parse_space(data, f"SPACE {path}")


def as_flags(values: dict[str, Any]) -> list[str]:
    """A trial's settings as the `train` flags a user would type."""
    fields, flags = sweepable_fields(), []
    for name, value in values.items():
        if isinstance(value, bool):  # train's switches are flags without a --no- form
            flags += [flag_of(fields[name])] if value else []
        else:
            flags += [
                flag_of(fields[name]),
                repr(value) if isinstance(value, float) and math.isfinite(value) else str(value),
            ]
    return flags
