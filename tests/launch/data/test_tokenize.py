"""launch.data.tokenize: cleaning, digests and ids of one chunk, in this process or in workers."""

import subprocess

import numpy as np
import pytest

from gpt_core import EOT_ID, get_tokenizer
from launch.data import sources, tokenize
from launch.data.sources import Chunk
from launch.data.tokenize import WorkerTokenizer, tokenize_chunk, tokenize_texts
from tests.helpers import REPO, child_env, make_stories, write_jsonl

from .common import prepared

ENCODING = WorkerTokenizer.of(get_tokenizer())


def test_cleaning_keeps_text_as_written_and_says_why_it_drops():
    texts = ['  Tom said, "don\'t!"  ', "", "   ", "tiny", None, 'Tom said, "don\'t!"']
    chunk = tokenize_chunk(Chunk("x", texts=texts), 10, ENCODING)
    assert chunk.codes.tolist() == [0, tokenize.EMPTY, tokenize.EMPTY, tokenize.SHORT, tokenize.NOT_TEXT, 0]
    assert get_tokenizer().decode(chunk.tokens[: chunk.lengths[0] - 1]) == 'Tom said, "don\'t!"'
    assert chunk.digests[0] == chunk.digests[1]  # the same story after trimming: the duplicate is dropped later


def test_tokens_are_uint16_with_end_of_text_after_each_story():
    tokens, lengths = tokenize_texts(["Once upon a time", "The end."], ENCODING)
    assert tokens.dtype == np.uint16
    assert tokens.tolist() == [7454, 2402, 257, 640, EOT_ID] + get_tokenizer().encode("The end.") + [EOT_ID]
    assert lengths.tolist() == [5, len(tokens) - 5]


@pytest.mark.slow
@pytest.mark.parametrize("trained", [False, True], ids=["gpt2", "trained"])
def test_worker_processes_give_the_same_cache_as_one_process(tmp_path, monkeypatch, request, trained):
    monkeypatch.setattr(tokenize, "POOL_MIN_BYTES", 0)
    monkeypatch.setattr(sources, "CHUNK_STORIES", 50)  # several chunks in flight, returned in order
    source = write_jsonl(tmp_path / "s.jsonl", make_stories(600) + make_stories(30))
    # a trained tokenizer reaches each worker as the `tokenizers` library's own object
    tokenizer = str(request.getfixturevalue("story_tokenizer")) if trained else None
    one = prepared(source, str(tmp_path / "a"), workers=1, split_mode="shuffle", tokenizer=tokenizer)
    two = prepared(source, str(tmp_path / "b"), workers=2, split_mode="shuffle", tokenizer=tokenizer)
    assert (one.meta["workers"], two.meta["workers"]) == (1, 2)
    assert one.meta["dropped"] == two.meta["dropped"] == {"exact duplicate": 30}
    for name in one.splits:
        assert np.array_equal(one.splits[name].tokens, two.splits[name].tokens)
        assert np.array_equal(one.splits[name].offsets, two.splits[name].offsets)


# Loaded by every Python process started with WATCH on its path: a spawned worker (its command line
# ends with --multiprocessing-fork) leaves a file for its start and one for each heavy import.
WATCH = """
import os, sys
if "--multiprocessing-fork" in sys.argv:
    log = os.environ["WORKER_IMPORT_LOG"]
    open(os.path.join(log, f"{os.getpid()}-started"), "w").close()

    class Watch:
        def find_spec(self, name, path=None, target=None):
            light = name in ("gpt_core", "gpt_core.errors", "gpt_core.files")  # torch-free helpers
            if name.split(".")[0] in ("torch", "gpt_core", "accelerate") and not light:
                open(os.path.join(log, f"{os.getpid()}-{name}"), "w").close()

    sys.meta_path.insert(0, Watch())
"""


@pytest.mark.slow
def test_workers_started_by_the_cli_import_neither_torch_nor_the_model(tmp_path):
    """`gpt-launch prepare` with two workers (a source past POOL_MIN_BYTES): the CLI imports torch,
    its workers must not (~200 MB each): of gpt_core they import only its torch-free helpers."""
    (tmp_path / "watch").mkdir()
    (tmp_path / "watch" / "sitecustomize.py").write_text(WATCH)
    (tmp_path / "log").mkdir()
    stories = [f"{s} And then story {i} went on a little longer." for i, s in enumerate(make_stories(150_000))]
    source = write_jsonl(tmp_path / "big.jsonl", stories)
    assert source.stat().st_size > tokenize.POOL_MIN_BYTES
    env = {**child_env(), "PYTHONPATH": f"{tmp_path / 'watch'}:{REPO}", "WORKER_IMPORT_LOG": str(tmp_path / "log")}
    args = [
        "gpt-launch",
        "prepare",
        "--data",
        source,
        "--data-cache",
        tmp_path / "cache",
        "--max-samples",
        "0",
        "--data-workers",
        "2",
    ]
    proc = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "tokenizing in 2 process(es)" in proc.stdout, proc.stderr[-2000:]
    logged = sorted(p.name.split("-", 1)[1] for p in (tmp_path / "log").iterdir())
    assert logged == ["started", "started"], logged
