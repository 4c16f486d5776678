"""launch/commands/generate.py: stories streamed from a run, a checkpoint or the newest run; its
sampling options, each checked before any model is loaded."""

import pytest

from gpt_core import get_tokenizer, load_pretrained
from tests.helpers import invoke


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


def test_generate_without_a_path_uses_the_newest_run(run_dir, tmp_path, monkeypatch):
    import shutil

    monkeypatch.chdir(tmp_path)
    result = invoke("generate", "--max-tokens", "3")
    assert result.exit_code == 2 and "no run under ./runs" in result.stderr
    shutil.copytree(run_dir, tmp_path / "runs" / "mine")
    result = invoke("generate", "--max-tokens", "3", "--seed", "0")
    assert result.exit_code == 0 and "runs/mine/checkpoints/best" in result.stderr


def test_a_prompt_that_is_not_utf8_gets_a_note(run_dir):
    result = invoke("generate", run_dir, "--max-tokens", "2", "--seed", "1", "-p", "caf\udce9")  # argv's b"caf\xe9"
    assert result.exit_code == 0 and "note: the prompt holds bytes that are not UTF-8" in result.stderr
    assert result.stdout.startswith("caf\ufffd")
