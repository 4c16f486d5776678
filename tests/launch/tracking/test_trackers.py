import pytest

from launch.tracking.trackers import scrub
from tests.faults import start, train_args, untimed, wait_for_step
from tests.helpers import REFERENCE, invoke


def test_scrub_masks_secrets_but_keeps_counts(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    data = {
        "api_key": "x",
        "hf_token": "y",
        "nested": {"WANDB_API_KEY": "z", "password": "p"},
        "tokens": 5,
        "max_tokens": 7,
        "tokens_per_s": 1.5,
        "note": f"key={'k' * 40}",
    }
    clean = scrub(data)
    assert (
        clean["api_key"]
        == clean["hf_token"]
        == clean["nested"]["WANDB_API_KEY"]
        == clean["nested"]["password"]
        == "***"
    )
    assert (clean["tokens"], clean["max_tokens"], clean["tokens_per_s"]) == (5, 7, 1.5)
    assert clean["note"] == "key=***"


@pytest.mark.slow
def test_killed_before_its_first_checkpoint_the_run_starts_its_logs_again(tmp_path, reference_run):
    out = tmp_path / "run"
    proc = start(train_args(out, *REFERENCE, "--save-every", "1000"))  # the first checkpoint: the epoch's end, step 4
    wait_for_step(out, 1, proc)
    proc.kill()
    proc.wait()
    assert not (out / "checkpoints").exists() and untimed(out), "killed after logging, before any checkpoint"
    resumed = invoke("train", "--resume", "auto", "--output-dir", out, check=True)  # the run's own settings
    assert "starting from scratch" in resumed.stdout and "dropped" in resumed.stdout
    assert untimed(out) == untimed(reference_run)
