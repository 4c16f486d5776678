"""`gpt-launch bench` on a tiny configuration: runs every measurement and returns well-formed figures."""

import json
import math

import pytest

from gpt_core import get_preset
from tests.helpers import invoke

pytestmark = pytest.mark.slow  # each measurement runs in a process of its own


def bench(*flags):
    """`gpt-launch bench` at its smallest: the tiny preset, one step of one round."""
    return invoke("bench", "--preset", "tiny", "--steps", "1", "--rounds", "1", "--grad-accum", "1", *flags, check=True)


def test_bench_command_returns_well_formed_figures(tmp_path):
    out = tmp_path / "bench.json"
    result = bench("--gen-tokens", "8", "--activation-checkpointing", "--json", out)
    assert "useful tok/s" in result.stdout and "MFU" in result.stdout and "ours is" in result.stdout
    figures = json.loads(out.read_text())
    assert figures["matmul_peak_tflops"] > 0 and figures["flops_per_token"] == get_preset("tiny").flops_per_token()
    assert set(figures["training"]) == {"ours", "ours_ckpt", "hf_gpt2"}  # transformers is installed here
    assert "memory vs ours" in result.stdout and figures["training"]["ours_ckpt"]["memory_vs_ours"] > 0
    for row in figures["training"].values():
        assert row["tokens_per_s"] > 0 and 0 < row["mfu"] < 1.5 and row["peak_memory_mb"] > 0
        assert math.isclose(
            row["mfu"], row["tokens_per_s"] * figures["flops_per_token"] / (figures["matmul_peak_tflops"] * 1e12)
        )
        assert 0 <= row["padding_fraction"] < 1
    row = figures["training"]["hf_gpt2"]
    assert math.isclose(row["ours_speedup"], figures["training"]["ours"]["tokens_per_s"] / row["tokens_per_s"])
    assert "evaluation" in result.stdout and set(figures["evaluation"]) == {"eval", "eval_full_logits"}
    for row in figures["evaluation"].values():
        assert row["tokens_per_s"] > 0 and row["peak_memory_mb"] > 0
        assert math.isclose(row["vs_training"], row["tokens_per_s"] / figures["training"]["ours"]["tokens_per_s"])
    gen = figures["generation"]
    assert gen["cached_tokens_per_s"] > 0 and math.isclose(
        gen["cache_speedup"], gen["cached_tokens_per_s"] / gen["uncached_tokens_per_s"]
    )
    assert figures["data_preparation"]["tokens"] > 0 and figures["data_preparation"]["tokens_per_s"] > 0
    cpu = figures["cpu_bf16"]  # this CPU's bf16 hardware and what it is worth, measured
    assert cpu["matmul_speedup"] > 0 and f"bf16 matmul {cpu['matmul_speedup']:.2f}x fp32 (measured)" in result.stdout
    assert cpu["advice"] is None or cpu["advice"] in result.stdout


def test_bench_json_to_stdout_is_one_object_and_compile_compiles():
    result = bench("--no-baselines", "--gen-tokens", "4", "--json", "-", "--compile")
    figures = json.loads(result.stdout)
    assert list(figures["training"]) == ["ours"]
    assert figures["compile"] and figures["training"]["ours"]["graphs_compiled"] >= 1  # it really compiled
