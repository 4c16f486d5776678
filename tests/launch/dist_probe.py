"""Run under `accelerate launch` by test_distributed.py: records, per process, which training rows
this process's prepared dataloader yields in two epochs, then trains and records its final metrics."""

import dataclasses
import json
import sys
from pathlib import Path

from launch.data.batching import make_dataloader, make_dataset
from launch.data.prepare import prepare_data
from launch.runtime.accelerator import make_accelerator
from launch.settings.config import DataConfig, smoke_config
from launch.training.loop import train

out, data = Path(sys.argv[1]), sys.argv[2]
cfg = dataclasses.replace(
    smoke_config(),
    data=DataConfig(source=data, cache_dir=str(out / "cache")),
    preset="tiny",
    output_dir=str(out / "run"),
    max_steps=6,
    eval_every=3,
    sample_tokens=8,
    mixed_precision="no",
)
accelerator = make_accelerator()
prepared = prepare_data(cfg.data, cfg.seed, log=lambda *_: None)
dataset = make_dataset(prepared.splits["train"], 32, "packed")
loader = accelerator.prepare(make_dataloader(dataset, 2, cfg.seed, True, True))
rows = {}
for epoch in range(2):
    loader.set_epoch(epoch)
    # identify each row by its first tokens: packed rows are distinct windows of the stream
    rows[epoch] = [x[:, :8].tolist() for x, _ in loader]
result = train(cfg)
rank = accelerator.process_index
(out / f"rank{rank}.json").write_text(
    json.dumps(
        {
            "rank": rank,
            "world": accelerator.num_processes,
            "rows": rows,
            "dataset_len": len(dataset),
            "test": result["test"],
        }
    )
)
