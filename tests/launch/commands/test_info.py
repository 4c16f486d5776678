"""launch/commands/info.py: a preset's or a checkpoint's size, cost and epoch-time estimate."""

import pytest

from tests.helpers import invoke


@pytest.mark.slow
def test_info_for_preset_and_checkpoint(run_dir):
    paper = invoke("info", "--preset", "paper", "--measure-steps", "1")
    assert paper.exit_code == 0 and "44,645,888" in paper.output and "FLOPs per token" in paper.output
    assert "median of 1 optimizer steps after 2 untimed" in paper.output  # measured as `bench` measures
    assert "estimated time per epoch" in paper.output
    assert "bf16 matrix hardware: " in paper.output and "x fp32 (measured)" in paper.output
    tiny = invoke("info", run_dir, "--measure-steps", "1")
    assert tiny.exit_code == 0 and '"d_model": 32' in tiny.output
    unknown = invoke("info", "--preset", "huge")
    assert unknown.exit_code == 2 and "unknown preset 'huge'" in unknown.stderr
