from launch.tracking.trackers import scrub


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
