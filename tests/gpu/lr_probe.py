"""Run by test_engines.py in place of recipes/tinystories.py, under `accelerate launch`: the recipe
itself, with an observer on AdamW's step that records the learning rate each update really applied
(its param groups' values at the moment the engine steps them, which under DeepSpeed happens inside
backward; ZeRO-2 steps one group per call). Rank 0 writes the list of each call's lrs to the file
named by LR_PROBE_OUT."""

import atexit
import json
import os
import runpy
from pathlib import Path

import torch

applied: list[list[float]] = []
original_step = torch.optim.AdamW.step


def observed_step(self, *args, **kwargs):
    applied.append([group["lr"] for group in self.param_groups])
    return original_step(self, *args, **kwargs)


def write() -> None:
    if os.environ.get("RANK", "0") == "0":
        Path(os.environ["LR_PROBE_OUT"]).write_text(json.dumps(applied))


torch.optim.AdamW.step = observed_step
atexit.register(write)
runpy.run_path(str(Path(__file__).resolve().parents[2] / "recipes" / "tinystories.py"), run_name="__main__")
