"""launch/commands/evaluate.py: perplexity as exp of the mean loss over real target tokens, in one
process or several, on the run's own data settings and tokenizer."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gpt_core import get_tokenizer, load_pretrained
from launch.data.batching import PackedDataset
from launch.data.prepare import prepare_data
from launch.settings.config import SMOKE_DATA, DataConfig
from tests.helpers import invoke, launch_two, run_cli
from tests.launch.data.common import story_texts


def reference_metrics(run_dir, layout_rows):
    """Perplexity and bits per byte computed by hand, row by row, for comparison with the command:
    the bytes are those of the text the target tokens decode to, <|endoftext|> separators left out."""
    model, tokenizer = load_pretrained(run_dir / "checkpoints" / "best").eval(), get_tokenizer()
    loss_sum, tokens, correct, text = 0.0, 0, 0, b""
    with torch.no_grad():
        for x, y in layout_rows:
            logits, _ = model(x[None])
            mask = y != -100
            loss_sum += F.cross_entropy(logits[0][mask], y[mask], reduction="sum").item()
            correct += (logits[0].argmax(-1)[mask] == y[mask]).sum().item()
            tokens += int(mask.sum())
            text += tokenizer.decode_bytes([t for t in y[mask].tolist() if t != tokenizer.eot_id])
    return loss_sum / tokens, correct / tokens, tokens, loss_sum / math.log(2) / len(text)


def test_evaluate_is_exp_of_mean_token_loss(run_dir, tmp_path):
    out = tmp_path / "metrics.json"
    args = [
        "evaluate",
        run_dir,
        "--data",
        SMOKE_DATA,
        "--split",
        "validation",
        "--data-cache",
        tmp_path / "c",
        "--batch-size",
        "3",
        "--json-out",
        out,
    ]
    assert invoke(*args).exit_code == 0
    got = json.loads(out.read_text())
    split = prepare_data(DataConfig(source=str(SMOKE_DATA), cache_dir=str(tmp_path / "c")), log=lambda *_: None).splits[
        "validation"
    ]
    ds = PackedDataset(split, 32)
    loss, acc, tokens, bits_per_byte = reference_metrics(run_dir, [ds[i] for i in range(len(ds))])
    assert got["tokens"] == tokens == len(ds) * 32
    assert got["loss"] == pytest.approx(loss, rel=1e-5) and got["accuracy"] == pytest.approx(acc)
    assert got["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert got["bits_per_byte"] == pytest.approx(bits_per_byte, rel=1e-5)
    assert 3 < got["bytes"] / got["tokens"] < 6  # English text: ~4 bytes a GPT-2 token


def test_evaluate_takes_the_data_settings_from_the_run(run_dir, tmp_path):
    """No --data: the run's own train_config.json says which stories and split, not the paper's hub default."""
    out = tmp_path / "m.json"
    result = invoke("evaluate", run_dir, "--split", "validation", "--json-out", out, env={"HF_HUB_OFFLINE": "1"})
    assert "data settings from" in result.stdout and "train_config.json" in result.stdout
    assert json.loads(out.read_text())["data"] == str(SMOKE_DATA)


def test_evaluate_padded_counts_no_padding(run_dir, tmp_path):
    out = tmp_path / "m.json"
    invoke(
        "evaluate",
        run_dir,
        "--data",
        SMOKE_DATA,
        "--split",
        "test",
        "--layout",
        "padded",
        "--data-cache",
        tmp_path / "c",
        "--json-out",
        out,
    )
    split = prepare_data(DataConfig(source=str(SMOKE_DATA), cache_dir=str(tmp_path / "c")), log=lambda *_: None).splits[
        "test"
    ]
    expected_tokens = int((np.minimum(split.story_lengths, 33) - 1).sum())
    assert json.loads(out.read_text())["tokens"] == expected_tokens


@pytest.mark.slow
def test_evaluate_two_processes_match_one(run_dir, tmp_path):
    # 15 validation rows over 2 processes x batch 2: Accelerate repeats rows to even out the last
    # batch; gather_for_metrics must drop them so every token is counted once.
    common = [
        str(run_dir),
        "--data",
        str(SMOKE_DATA),
        "--split",
        "validation",
        "--batch-size",
        "2",
        "--data-cache",
        str(tmp_path / "c"),
    ]
    invoke("evaluate", *common, "--json-out", tmp_path / "one.json", check=True)
    run_cli(launch_two("-m", "launch.cli", "evaluate", *common, "--json-out", str(tmp_path / "two.json")))
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert two["processes"] == 2 and one["tokens"] == two["tokens"]
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-6) and two["accuracy"] == pytest.approx(one["accuracy"])


# ---- a run with a trained tokenizer: the weights carry it, so no flag is needed to find it ----
def test_evaluate_and_generate_use_the_tokenizer_the_weights_carry(story_run, story_tokenizer, tmp_path):
    out = tmp_path / "validation.json"
    result = invoke("evaluate", story_run, "--split", "validation", "--layout", "documents", "--json-out", out)
    assert result.exit_code == 0 and "512-token BPE" in result.stdout
    got = json.loads(out.read_text())
    stories = prepare_data(
        DataConfig(source=str(SMOKE_DATA), cache_dir=str(story_run.parent / "cache"), tokenizer=str(story_tokenizer)),
        log=lambda *_: None,
    )
    texts = story_texts(stories.splits["validation"], stories.tokenizer)
    assert got["bytes"] == sum(len(t.encode()) for t in texts)  # each story's text scored once, in its own bytes
    assert got["tokens"] == len(stories.splits["validation"].tokens) - len(texts)  # no <|endoftext|> predicted
    sample = invoke("generate", story_run, "--max-tokens", "30", "--seed", "1", check=True)
    assert sample.stdout.startswith("Once upon a time") and "<|endoftext|>" not in sample.stdout
    for command in ("generate", "evaluate"):
        refused = invoke(command, story_run, "--tokenizer", "gpt2")
        errors = [line for line in refused.stderr.splitlines() if "error:" in line]
        assert refused.exit_code == 2 and len(errors) == 1, refused.stderr
        assert "was trained with the 512-token BPE" in errors[0] and "not with GPT-2 BPE (50,257 tokens)" in errors[0]
