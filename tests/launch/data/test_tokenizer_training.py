"""launch.data.tokenizer_training: a BPE trained on the train split only, the same every time."""

import gzip
import json

import pytest

from gpt_core import load_tokenizer
from launch.data.tokenizer_training import train_tokenizer
from launch.settings.config import DataConfig
from tests.helpers import invoke, make_stories, write_jsonl

from .common import prepared, story_texts

RARE = "Zorblax"  # a word a BPE of this size learns as one token when it sees it often enough


def corpus(tmp_path, rare_in: str):
    """100 stories, cut 70/20/10 in order; RARE written often in the train or the held-out part."""
    stories = make_stories(100)
    part = range(70) if rare_in == "train" else range(70, 100)
    for i in part:
        stories[i] += f" {RARE} said {RARE}. {RARE}!"
    return write_jsonl(tmp_path / f"{rare_in}.jsonl", stories), stories


def vocabulary(path) -> set[str]:
    return set(json.loads(path.read_text())["model"]["vocab"])


def test_training_is_deterministic_and_never_sees_validation_or_test(tmp_path):
    source, stories = corpus(tmp_path, rare_in="heldout")
    cfg = DataConfig(source=str(source), cache_dir=str(tmp_path / "cache"))
    first = train_tokenizer(cfg, 1234, 400, tmp_path / "a", log=lambda _: None)
    again = train_tokenizer(cfg, 1234, 400, tmp_path / "b", log=lambda _: None)
    assert first.read_bytes() == again.read_bytes()
    train = prepared(source, str(tmp_path / "cache")).splits["train"]
    assert story_texts(train) == stories[:70]  # what the trainer reads
    assert not any("orbl" in token for token in vocabulary(first))

    seen, _ = corpus(tmp_path, rare_in="train")  # the same word in train stories: learnt
    cfg = DataConfig(source=str(seen), cache_dir=str(tmp_path / "cache"))
    assert any("orbl" in token for token in vocabulary(train_tokenizer(cfg, 1234, 400, tmp_path / "c", print)))


def test_every_shared_story_comes_back_byte_for_byte(shared_tinystories, tmp_path):
    cfg = DataConfig(source=str(shared_tinystories), cache_dir=str(tmp_path / "cache"))
    tokenizer = load_tokenizer(train_tokenizer(cfg, 1234, 4096, tmp_path / "story", log=lambda _: None))
    stories = [
        json.loads(line)["text"]
        for path in sorted(shared_tinystories.glob("*.jsonl.gz"))
        for line in gzip.decompress(path.read_bytes()).decode().splitlines()
    ]
    assert len(stories) == 5813
    for story in stories:  # the raw text, before any cleaning: every byte survives
        assert tokenizer.decode(tokenizer.encode(story)) == story
    # and it compresses the stories almost as well as GPT-2's 50,257 tokens do, with 12 times fewer
    ours = sum(len(tokenizer.encode(s)) for s in stories[:500])
    gpt2 = sum(len(load_tokenizer(None).encode(s)) for s in stories[:500])
    assert ours < 1.1 * gpt2


@pytest.mark.parametrize(
    "flags, problem",
    [(["--vocab-size", "200"], "--vocab-size must be at least 257"), ([], "already exists")],
)
def test_bad_requests_are_one_line(story_tokenizer, flags, problem):
    result = invoke("tokenizer", "train", "--output", story_tokenizer, *flags)
    assert result.exit_code == 2 and problem in result.output and len(result.output.strip().splitlines()) == 1
