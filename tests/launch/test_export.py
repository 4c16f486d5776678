"""`gpt-launch export`: a model folder that gpt_core loads, with a model card holding the run's real metrics."""

import json

import pytest
import torch
import yaml

from gpt_core import load_pretrained
from tests.helpers import PYTHON, invoke, run_cli

pytestmark = pytest.mark.slow


def export(run_dir, out, *extra, env=None, check=True):
    """In a process of its own when `env` matters: huggingface_hub reads it when first imported."""
    if env is None:
        return invoke("export", run_dir, out, *extra, check=check)
    return run_cli([PYTHON, "-m", "launch.cli", "export", run_dir, out, *extra], env=env, check=check)


def test_exported_folder_loads_and_its_card_holds_the_real_metrics(wandb_offline_run, tmp_path):
    out = tmp_path / "tiny-stories-model"
    export(wandb_offline_run, out)
    assert {p.name for p in out.iterdir()} == {
        "model.safetensors",
        "config.json",
        "tokenizer_config.json",
        "README.md",
        "curves.png",
    }
    exported, best = load_pretrained(out), load_pretrained(wandb_offline_run / "checkpoints" / "best")
    for (name, a), (_, b) in zip(exported.state_dict().items(), best.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer"] == "gpt2"

    card = (out / "README.md").read_text()
    assert card.startswith("---\n")
    header, body = card[4:].split("\n---\n", 1)
    meta = yaml.safe_load(header)
    summary = json.loads((wandb_offline_run / "summary.json").read_text())
    assert meta["license"] == "mit" and meta["datasets"] == ["roneneldan/TinyStories"]
    metrics = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert metrics["perplexity"] == pytest.approx(summary["test"]["perplexity"], abs=1e-4)
    assert metrics["accuracy"] == pytest.approx(summary["test"]["accuracy"], abs=1e-4)
    assert metrics["loss"] == pytest.approx(summary["test"]["loss"], abs=1e-4)
    assert "CDLA-Sharing-1.0" in body and "load_pretrained" in body and f"{summary['model']['parameters']:,}" in body
    assert summary["samples"][0]["prompt"] in body and summary["hardware"]["device"] in body


def test_export_refuses_a_folder_in_use(wandb_offline_run, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    result = export(wandb_offline_run, tmp_path / "taken", check=False)
    assert result.exit_code == 2 and "not empty" in result.stderr
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_push_without_a_token_or_a_network_fails_in_one_line_and_keeps_the_folder(wandb_offline_run, tmp_path):
    no_token = {"HF_TOKEN": "", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    result = export(wandb_offline_run, tmp_path / "a", "--push", "me/tiny", env=no_token, check=False)
    assert result.returncode == 2 and "no Hugging Face token" in result.stderr
    assert load_pretrained(tmp_path / "a").num_params() > 0
    unreachable = {**no_token, "HF_TOKEN": "hf_" + "x" * 34, "HF_ENDPOINT": "http://127.0.0.1:9"}
    result = export(wandb_offline_run, tmp_path / "b", "--push", "me/tiny", env=unreachable, check=False)
    assert result.returncode == 2 and "upload to me/tiny failed" in result.stderr and "Traceback" not in result.stderr
    assert "hf_xxxx" not in result.stderr and (tmp_path / "b" / "README.md").exists()
