"""launch/cli.py: the table of commands: help, and every bad input one line before any work, on the
session's tiny trained run."""

import json
import subprocess

import pytest

from tests.helpers import invoke


def test_help_explains_the_options():
    result = invoke("train", "--help")
    assert result.exit_code == 0
    for words in ("--smoke", "--data", "--resume", "--tracker", "--preset", "paper", "270000"):
        assert words in result.output
    for command in ("generate", "evaluate", "info", "report", "bench"):
        assert invoke(command, "--help").exit_code == 0


# ---- bad input: one line, exit 2, nothing left behind, checked before any work ----------------------------
@pytest.fixture
def immutable(tmp_path):
    """A folder nothing can be written into, even by root (chattr +i): what a read-only target is to a
    user without root, or to root without CAP_DAC_OVERRIDE."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


def bad_input(tmp_path, *args, words: str):
    """`gpt-launch ARGS` in this process: exit 2, one `error:` line holding `words`, nothing new under tmp_path."""
    before = sorted(tmp_path.rglob("*"))
    result = invoke(*args)
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.exit_code == 2 and len(errors) == 1, result.stderr[-2000:]
    assert words in errors[0] and errors[0].startswith("error: ") and "; " in errors[0], errors[0]
    assert "Usage:" not in result.output and "Traceback" not in result.output
    assert sorted(tmp_path.rglob("*")) == before
    return errors[0]


BAD_COMMANDS = [  # (args, with RUN, FILE and TMP to fill in; words of the error)
    (
        ["tokenizer", "train", "--vocab-size", "1000000000", "--output", "TMP/tok"],
        "--vocab-size must be at most 1,048,576",
    ),
    (["tokenizer", "train", "--output", "FILE/sub"], "is a file, so nothing can be made under it"),
    (["tokenizer", "train", "--output", "FILE"], "--output FILE is a file; give a folder path"),
    (["tokenizer", "train", "--output", ""], "--output is empty"),
    (["export", "RUN", "FILE/out"], "is a file, so nothing can be made under it"),
    (["evaluate", "RUN", "--json-out", "FILE/m.json"], "is a file, so nothing can be made under it"),
    (["evaluate", "RUN", "--batch-size", "0"], "--batch-size must be >= 1, got 0; give --batch-size 1 or more"),
    (["evaluate", "RUN", "--max-batches", "0"], "--max-batches must be >= 1, got 0"),
    (["evaluate", "RUN", "--split", "heldout"], "Invalid value for '--split': 'heldout' is not one of"),
    (["share", "FILE"], "Invalid value for 'RUN_DIR'"),
    (["report", "RUN", "--output", "TMP"], "is a folder; give a file path"),
    (["generate", "RUN", "--seed", "99999999999999999999999"], "--seed must be <= 4,294,967,295"),
    (["generate", "RUN", "--seed", "-1"], "--seed must be >= 0, got -1"),
    (["generate", "TMP/none", "--top-p", "1.5"], "--top-p must be in (0, 1]"),  # before looking for weights
    (["generate", "TMP/none", "--temperature", "-1"], "--temperature must be > 0"),
    (["generate", "RUN", "--device", "cuda:7"], "--device cuda:7: this machine has"),
    (["generate", "RUN", "--device", "warp-drive"], "--device warp-drive is not a device"),
    (["train", "--tokenizer", "RUN", "--output-dir", "TMP/run"], "uses GPT-2 BPE; pass --tokenizer gpt2"),
    (["train", "--max-samples", "-1", "--output-dir", "TMP/run"], "--max-samples must be >= 3 (or 0 for all), got -1"),
    (
        ["train", "--min-lr", "-0.0001", "--output-dir", "TMP/run"],
        "--min-lr must be >= 0, got -0.0001; give --min-lr 0",
    ),
    (["train", "--tokenizer", "FILE", "--output-dir", "TMP/run"], "is not a readable tokenizer.json"),
]


@pytest.mark.parametrize("args, words", BAD_COMMANDS, ids=lambda v: " ".join(v)[:60] if isinstance(v, list) else "")
def test_a_bad_input_is_one_line_before_any_work(run_dir, tmp_path, args, words):
    (tmp_path / "file.txt").write_text("not a folder\n")
    fill = {"RUN": str(run_dir), "FILE": str(tmp_path / "file.txt"), "TMP": str(tmp_path)}
    args = [next((a.replace(k, v) for k, v in fill.items() if a.startswith(k)), a) for a in args]
    bad_input(tmp_path, *args, words=words.replace("FILE", fill["FILE"]))


def test_a_transformers_folder_of_another_architecture_says_which_ones_are_read(tmp_path):
    folder = tmp_path / "neox"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"]}))
    (folder / "model.safetensors").write_bytes(b"")
    for args in (
        ["generate", folder],
        ["evaluate", folder],
        ["train", "--init-from", folder, "--output-dir", tmp_path / "r"],
    ):
        line = bad_input(
            tmp_path, *args, words="a transformers GPTNeoXForCausalLM model, an architecture gpt_core does not"
        )
        assert "GPT2LMHeadModel" in line and "LlamaForCausalLM" in line and len(line) < 300


def test_read_only_targets_are_one_line_before_any_work(run_dir, tmp_path, immutable):
    for args in (
        ["export", run_dir, immutable / "out"],
        ["tokenizer", "train", "--output", immutable / "tok"],
        ["evaluate", run_dir, "--json-out", immutable / "m.json"],
        ["train", "--smoke", "--preset", "tiny", "--data-cache", immutable / "cache", "--output-dir", tmp_path / "r"],
    ):
        bad_input(tmp_path, *args, words=f"cannot write in {immutable}")
