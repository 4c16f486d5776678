"""launch/optim.py: the learning-rate schedule."""

import pytest

from launch.config import TrainConfig
from launch.optim import lr_at


def test_schedule_warms_up_then_anneals():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10)
    assert lr_at(0, cfg, 100) == pytest.approx(1e-4)
    assert lr_at(9, cfg, 100) == pytest.approx(1e-3)
    assert lr_at(55, cfg, 100) == pytest.approx(5e-4)
    assert lr_at(100, cfg, 100) == pytest.approx(0.0, abs=1e-12)
