"""`gpt-launch evaluate`: a checkpoint's metrics on a split of its run's data (or of any stories)."""

from __future__ import annotations

from gpt_core import load_pretrained
from gpt_core.files import write_json
from launch.checkpoints.folders import resolve_weights, run_dir_of
from launch.checkpoints.restoring import read_trainer_state
from launch.checkpoints.weights import weights_tokenizer
from launch.data.batching import make_dataloader, make_dataset
from launch.data.prepare import prepare_data
from launch.data.splits import concat_splits
from launch.errors import check_writable
from launch.runtime.accelerator import make_accelerator
from launch.runtime.devices import resolve_device
from launch.runtime.precision import choose_precision
from launch.runtime.processes import rank_print
from launch.settings.commands import EvaluateSettings
from launch.settings.config import RUN_CONFIG_NAME, TrainConfig, saved_run_config
from launch.settings.fields import replace_paths
from launch.training.evaluation import evaluate, metrics_text


def evaluate_checkpoint(checkpoint: str | None, s: EvaluateSettings, given: dict) -> dict:
    """`gpt-launch evaluate`: a checkpoint on a split of the run's own data settings (its
    train_config.json), each of train's flags in `given` replacing one of them; works under
    `accelerate launch`. It runs in --mixed-precision if given, else in the weights' own training
    precision where this device runs that at speed."""
    if s.json_out is not None:
        check_writable(s.json_out, "--json-out", "file")
    folder = resolve_weights(checkpoint)
    trained = read_trainer_state(folder).get("mixed_precision")
    precision, why = choose_precision(resolve_device(), s.mixed_precision, trained)
    accelerator = make_accelerator(mixed_precision=precision)
    model = load_pretrained(folder).to(accelerator.device)
    tokenizer = weights_tokenizer(folder, model.config.vocab_size, given.get("data.tokenizer"))
    run_config = saved_run_config(run_dir_of(folder))
    cfg = replace_paths(run_config or TrainConfig(), given | {"data.tokenizer": tokenizer.path and str(tokenizer.path)})
    where = run_dir_of(folder) / RUN_CONFIG_NAME if run_config else "the paper recipe"
    accelerator.print(
        f"evaluate: data settings from {where}, changed by the flags given; {tokenizer.describe()}; in {why}"
    )
    prepared = prepare_data(cfg.data, cfg.seed, log=accelerator.print, every_rank=rank_print)
    chosen = concat_splits(prepared.splits.values()) if s.split == "all" else prepared.splits[s.split]
    dataset = make_dataset(chosen, model.config.context_length, cfg.layout)
    loader = accelerator.prepare(make_dataloader(dataset, s.batch_size, cfg.seed, shuffle=False, drop_last=False))
    metrics = evaluate(model, loader, accelerator, tokenizer, s.max_batches, desc=f"evaluate {s.split}")
    result = {
        "checkpoint": str(folder),
        "data": cfg.data.source,
        "split": s.split,
        "layout": cfg.layout,
        "processes": accelerator.num_processes,
        "mixed_precision": precision,
        **metrics,
    }
    if accelerator.is_main_process:
        print(f"{s.split}: {metrics_text(metrics)}, {accelerator.num_processes} process(es)")
        if s.json_out:
            write_json(s.json_out, result)
    # Tear the process group down on every rank together: a rank that exits while another still
    # writes can abort in gloo's teardown ("terminate called without an active exception").
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result
