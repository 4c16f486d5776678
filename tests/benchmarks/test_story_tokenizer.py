"""benchmarks/story_tokenizer.py: the figures it derives from the splits and the runs' own logs."""

import json

import pytest

from benchmarks.story_tokenizer import split_figures, tokens_per_second
from launch.settings.config import SMOKE_DATA, DataConfig
from tests.launch.data.common import prepared, story_texts


@pytest.mark.parametrize("trained", [False, True])
def test_bytes_per_token_and_tokens_per_story_are_those_of_the_text(tmp_path, story_tokenizer, trained):
    tokenizer = str(story_tokenizer) if trained else None
    figures = split_figures(DataConfig(source=str(SMOKE_DATA), cache_dir=str(tmp_path), tokenizer=tokenizer))
    data = prepared(SMOKE_DATA, str(tmp_path), tokenizer=tokenizer)
    assert figures["vocab_size"] == (512 if trained else 50257)
    for name in ("train", "validation"):
        split, texts = data.splits[name], story_texts(data.splits[name], data.tokenizer)
        assert figures[name]["tokens_per_story"] == pytest.approx(len(split.tokens) / len(texts))
        text_bytes = sum(len(t.encode()) for t in texts)  # the <|endoftext|> separators are no text
        assert figures[name]["bytes_per_token"] == pytest.approx(text_bytes / len(split.tokens))


def test_training_speed_is_the_median_of_the_logged_windows_after_the_first(tmp_path):
    rows = [{"kind": "train", "tokens_per_s": v} for v in (10.0, 300.0, 100.0, 200.0)] + [{"kind": "eval"}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert tokens_per_second(tmp_path) == 200.0  # the warm-up window (10) left out
