"""benchmarks/data_pipeline.py: the synthetic corpus and the side-by-side preparation."""

import json
import re

import numpy as np
import pytest

from benchmarks import data_pipeline as bench_data
from gpt_core import get_tokenizer
from tests.helpers import REPO


def test_corpus_stories_are_new_mixes_of_real_sentences_of_real_length(shared_tinystories, tmp_path):
    bench_data.write_corpus(tmp_path / "corpus", 400, shared_tinystories, per_file=150)
    files = sorted((tmp_path / "corpus").glob("*.jsonl"))
    stories = [json.loads(line)["text"] for f in files for line in f.read_text().splitlines()]
    assert len(files) == 3 and len(stories) == 400 and len(set(stories)) == 400
    real = bench_data.real_stories(shared_tinystories)
    sentences = {s for story in real for s in bench_data.SENTENCE_END.split(story)}
    pieces = [s for story in stories[:50] for s in bench_data.SENTENCE_END.split(story)]
    # a real sentence that ends without . ! ? or a quote does not split off again after the join
    assert sum(s in sentences for s in pieces) >= 0.9 * len(pieces)
    assert not set(stories) & set(real)
    tok = get_tokenizer()
    mean = np.mean([len(tok.encode(s)) for s in stories])
    assert 0.75 < mean / np.mean([len(tok.encode(s)) for s in real[:1000]]) < 1.33  # ~204 tokens a story


@pytest.mark.slow
def test_run_compares_the_streaming_cache_with_the_in_memory_pipeline_from_git(shared_tinystories, tmp_path):
    if not (REPO / ".git").exists():
        pytest.skip("the in-memory reference is read from git history")
    bench_data.write_corpus(tmp_path / "corpus", 1000, shared_tinystories)
    result = bench_data.run(
        tmp_path / "corpus", workers=2, commit="a377509", skip_hf=True, scratch=tmp_path, serve_seconds=0.2
    )
    prepare = result["prepare"]
    assert prepare["streaming"]["tokens"] == prepare["in-memory"]["tokens"] > 150_000  # the same tokens either way
    assert prepare["streaming"]["peak_pss_mb"] > 0 and prepare["in-memory"]["disk_mb"] > 0
    assert 0 < result["cached_launch_s"] < prepare["streaming"]["wall_s"]
    assert set(result["serving"]) == {4, 64}
    for by_way in result["serving"].values():
        assert (
            by_way["streaming (batched)"]["tokens_per_s"] > 0 and by_way["in-memory (row by row)"]["tokens_per_s"] > 0
        )
    assert re.search(r"cached launch: \d+\.\d\d s", bench_data.format_result(result))
