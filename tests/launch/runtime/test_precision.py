"""launch/runtime/precision.py: the advice a CPU run gets from its measured bf16 factor."""

import pytest

from launch.runtime import precision as runtime_precision


def test_precision_advice_follows_this_cpus_measured_bf16_factor():
    """Measured once per process; fp32 is advised to try bf16 only where bf16 matrices are 2x faster,
    bf16 is told it is slower only where they are slower."""
    factor = runtime_precision.cpu_bf16_speedup()
    assert factor > 0 and runtime_precision.cpu_bf16_speedup() == factor
    assert (runtime_precision.cpu_precision_advice("no") is not None) == (
        factor >= runtime_precision.BF16_ADVICE_FACTOR
    )
    assert (runtime_precision.cpu_precision_advice("bf16") is not None) == (factor < 1.0)
    assert runtime_precision.cpu_precision_advice("fp16") is None  # a CPU refuses fp16 elsewhere, in one line


@pytest.mark.parametrize(
    ("features", "factor", "precision", "expected"),
    [
        (
            ["AMX"],
            6.7,
            "no",
            "this CPU (AMX) multiplies bf16 matrices 6.7x faster than fp32 (measured): it would "
            "train faster with --mixed-precision bf16",
        ),
        ([], 0.2, "bf16", "this CPU (no AMX or AVX-512 BF16) multiplies bf16 matrices at 0.20x fp32's speed"),
        (["AVX-512 BF16"], 1.5, "no", None),  # faster matrices, but not enough to speed up a step
        (["AMX"], 6.7, "bf16", None),
    ],
)
def test_precision_advice_says_the_factor_and_the_flag(monkeypatch, features, factor, precision, expected):
    monkeypatch.setattr(runtime_precision, "cpu_bf16_features", lambda: features)
    monkeypatch.setattr(runtime_precision, "cpu_bf16_speedup", lambda: factor)
    advice = runtime_precision.cpu_precision_advice(precision)
    assert advice is None if expected is None else expected in advice and advice.startswith("note: ")
