"""Every `gpt-launch` subcommand, on the session's tiny trained run, in this process except where
several processes are the point."""

import json
import math
import subprocess

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


@pytest.fixture(scope="module")
def run_dir(finished_run):
    return finished_run


def test_help_explains_the_options():
    result = invoke("train", "--help")
    assert result.exit_code == 0
    for words in ("--smoke", "--data", "--resume", "--tracker", "--preset", "paper", "270000"):
        assert words in result.output
    for command in ("generate", "evaluate", "info", "report", "bench"):
        assert invoke(command, "--help").exit_code == 0


def test_generate_from_a_run_folder(run_dir):
    result = invoke("generate", run_dir, "--prompt", "Once upon a time", "--max-tokens", "12", "--seed", "3")
    assert result.exit_code == 0 and result.stdout.startswith("Once upon a time")
    again = invoke("generate", run_dir, "--prompt", "Once upon a time", "--max-tokens", "12", "--seed", "3")
    assert again.stdout == result.stdout
    model = load_pretrained(run_dir / "checkpoints" / "best")
    from gpt_core import generate

    ids = generate(model, get_tokenizer().encode("Once upon a time"), 12, seed=3)
    expected = "Once upon a time" + get_tokenizer().decode([t for t in ids if t != 50256])
    assert result.stdout.rstrip("\n") == expected


def test_generate_num_samples_greedy_and_interactive(run_dir):
    two = invoke("generate", run_dir, "-p", "The brave knight", "--max-tokens", "6", "-n", "2", "--seed", "1")
    assert two.stdout.count("The brave knight") == 2 and "---" in two.stdout
    greedy = invoke("generate", run_dir / "checkpoints" / "best", "-p", "Tom", "--max-tokens", "6", "--greedy")
    assert greedy.exit_code == 0 and greedy.stdout.startswith("Tom")
    session = invoke(
        "generate", run_dir, "-i", "--max-tokens", "5", "--seed", "0", input="Once upon a time\nThe little girl\n\n"
    )
    assert session.exit_code == 0
    assert "Once upon a time" in session.stdout and "The little girl" in session.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["--temperature", "0"], "temperature must be > 0 when sampling, got 0.0; use --greedy"),
        (["--max-tokens", "0"], "--max-tokens must be >= 1, got 0"),
        (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
        (["--prompt", "word" + " word" * 39], "prompt has 40 tokens but the model's context is 32"),
    ],
)
def test_generate_bad_arguments_are_one_line_errors(run_dir, args, words):
    result = invoke("generate", run_dir, "--max-tokens", "3", *args)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and words in errors[0], result.stderr
    assert "Traceback" not in result.output
    assert "error" not in result.stdout, "the error is a line of its own, not glued to an echoed prompt"


def test_generate_missing_checkpoint(tmp_path):
    result = invoke("generate", tmp_path / "nope")
    assert result.exit_code == 2 and "does not exist" in result.stderr


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


@pytest.mark.slow
def test_info_for_preset_and_checkpoint(run_dir):
    paper = invoke("info", "--preset", "paper", "--measure-steps", "1")
    assert paper.exit_code == 0 and "44,645,888" in paper.output and "FLOPs per token" in paper.output
    assert "median of 1 optimizer steps after 2 untimed" in paper.output  # measured as `bench` measures
    assert "estimated time per epoch" in paper.output
    tiny = invoke("info", run_dir, "--measure-steps", "1")
    assert tiny.exit_code == 0 and '"d_model": 32' in tiny.output
    unknown = invoke("info", "--preset", "huge")
    assert unknown.exit_code == 2 and "unknown preset 'huge'" in unknown.stderr


def test_report_markdown_and_html(run_dir, tmp_path):
    md = invoke("report", run_dir, "--format", "md", "-o", tmp_path / "r.md")
    assert md.exit_code == 0
    text = (tmp_path / "r.md").read_text()
    assert "![training curves](curves.png)" in text and "Once upon a time" in text and "perplexity" in text
    assert "1 process(es), mixed precision no (fp32)" in text  # the hardware row says what each figure is
    test = json.loads((run_dir / "summary.json").read_text())["test"]
    assert f"| test loss / perplexity / accuracy / bits per byte | {test['loss']:.4f} / " in text
    assert f" / {test['bits_per_byte']:.4f} |" in text  # bits per byte, as the summary holds it
    invoke("report", run_dir)
    html = (run_dir / "report.html").read_text()
    assert html.startswith("<!doctype html>") and "data:image/png;base64,iVBORw0KGgo" in html  # an embedded real PNG
    assert "parameters" in html and "The brave knight" in html
    missing = invoke("report", tmp_path)
    assert missing.exit_code == 2 and "has no summary.json" in missing.stderr


def test_generate_without_a_path_uses_the_newest_run(run_dir, tmp_path, monkeypatch):
    import shutil

    monkeypatch.chdir(tmp_path)
    result = invoke("generate", "--max-tokens", "3")
    assert result.exit_code == 2 and "no run under ./runs" in result.stderr
    shutil.copytree(run_dir, tmp_path / "runs" / "mine")
    result = invoke("generate", "--max-tokens", "3", "--seed", "0")
    assert result.exit_code == 0 and "runs/mine/checkpoints/best" in result.stderr


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
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (folder / "model.safetensors").write_bytes(b"")
    for args in (
        ["generate", folder],
        ["evaluate", folder],
        ["train", "--init-from", folder, "--output-dir", tmp_path / "r"],
    ):
        line = bad_input(
            tmp_path, *args, words="a transformers LlamaForCausalLM model, an architecture gpt_core does not"
        )
        assert "GPT2LMHeadModel" in line and len(line) < 300


def test_read_only_targets_are_one_line_before_any_work(run_dir, tmp_path, immutable):
    for args in (
        ["export", run_dir, immutable / "out"],
        ["tokenizer", "train", "--output", immutable / "tok"],
        ["evaluate", run_dir, "--json-out", immutable / "m.json"],
        ["train", "--smoke", "--preset", "tiny", "--data-cache", immutable / "cache", "--output-dir", tmp_path / "r"],
    ):
        bad_input(tmp_path, *args, words=f"cannot write in {immutable}")


def test_a_prompt_that_is_not_utf8_gets_a_note(run_dir):
    result = invoke("generate", run_dir, "--max-tokens", "2", "--seed", "1", "-p", "caf\udce9")  # argv's b"caf\xe9"
    assert result.exit_code == 0 and "note: the prompt holds bytes that are not UTF-8" in result.stderr
    assert result.stdout.startswith("caf\ufffd")
