"""The GPU paths, run on every device this machine has: the CPU always (CI runs them there), and CUDA
where there is one. `pytest tests/gpu` runs both halves on a GPU machine; `pytest -m gpu` the CUDA
half alone. Each test body is the same on both; where a CPU result is bit-exact and a GPU's is not
(kernel choice, atomics), the tolerance is the device's (`same_run`)."""

import pytest
import torch

CUDA = pytest.param(
    "cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
)


@pytest.fixture(scope="session", params=["cpu", CUDA])
def device(request) -> torch.device:
    return torch.device(request.param)


def device_env(device: torch.device, launched: bool = False) -> dict:
    """What puts a run on `device` where Accelerate would take the GPU: Accelerate's CPU switch for a
    run in this process; for launched processes no GPU to see (DeepSpeed's launch ignores the switch)."""
    if device.type != "cpu" or not torch.cuda.is_available():
        return {}
    return {"CUDA_VISIBLE_DEVICES": ""} if launched else {"ACCELERATE_USE_CPU": "true"}


def close(a: list[dict], b: list[dict], rel: float) -> None:
    """The same records (outcome), every number within `rel`: runs whose kernels differ in the last bits."""
    assert [(r["kind"], r["step"]) for r in a] == [(r["kind"], r["step"]) for r in b]
    for x, y in zip(a, b, strict=True):
        for key, value in x.items():
            expected = pytest.approx(value, rel=rel) if isinstance(value, float) else value
            assert y[key] == expected, (x["kind"], x["step"], key)


def same_run(device: torch.device, resumed: list[dict], straight: list[dict], rel: float = 1e-4) -> None:
    """A resumed run's records equal the straight run's: every bit on a CPU, within `rel` on a GPU."""
    if device.type == "cpu":
        assert resumed == straight
    else:
        close(straight, resumed, rel)
