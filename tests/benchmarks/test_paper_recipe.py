"""benchmarks/paper_recipe.py: the paper's recipe as written, measured by the bench's own machinery."""

import math

import pytest

from benchmarks.paper_recipe import IMPLEMENTATIONS, PaperGPT
from gpt_core import GPT, get_preset
from launch.bench.baselines import hf_gpt2
from launch.bench.run import run_bench
from launch.settings.commands import BenchSettings


def test_baselines_have_the_same_size_as_ours():
    config = get_preset("tiny").replace(norm="post")  # the paper's placement: no final LayerNorm
    ours = GPT(config).num_params()
    assert sum(p.numel() for p in PaperGPT(config).parameters()) == ours
    hf = sum(p.numel() for p in hf_gpt2(config).parameters())
    assert abs(hf - ours) / ours < 0.02  # GPT-2 adds learned positions and a final LayerNorm


@pytest.mark.slow
def test_the_paper_recipe_is_measured_beside_ours_on_padded_rows(tmp_path):
    from tests.helpers import make_stories, write_jsonl

    # stories of ~25 tokens, shorter than the tiny preset's context (32): padded rows have padding
    data = write_jsonl(tmp_path / "short.jsonl", make_stories(200))
    settings = BenchSettings(
        preset="tiny", steps=1, rounds=1, grad_accum=1, gen_tokens=4, data=str(data), cache_dir=str(tmp_path / "cache")
    )
    figures = run_bench(settings, {k: IMPLEMENTATIONS[k] for k in ("ours", "paper")}, progress=lambda _: None)
    ours, paper = figures["training"]["ours"], figures["training"]["paper"]
    assert ours["padding_fraction"] == 0 and 0 < paper["padding_fraction"] < 1  # one padded story per row
    assert abs(paper["parameters"] - ours["parameters"]) <= 2 * 32  # tiny is pre-LN: one final LayerNorm more
    assert math.isclose(paper["ours_speedup"], ours["tokens_per_s"] / paper["tokens_per_s"])
