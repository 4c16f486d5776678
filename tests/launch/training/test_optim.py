"""launch/training/optim.py: the learning-rate schedules, against their formulas, through a resume."""

import math

import pytest

from launch.settings.config import TrainConfig
from launch.training.optim import lr_at
from tests.helpers import LLAMA_RUN, llama_config, outcome, records, train_here


def expected_lr(schedule: str, step: int, lr=1e-3, min_lr=1e-4, warmup=2, total=10, decay_fraction=0.25) -> float:
    """Each schedule written out on its own, for update `step` (from 0)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = min((step - warmup) / (total - warmup), 1.0)
    return {
        "cosine": min_lr + (lr - min_lr) * (1 + math.cos(math.pi * p)) / 2,
        "linear": lr - (lr - min_lr) * p,
        "constant": lr,
        "wsd": lr if p < 1 - decay_fraction else lr - (lr - min_lr) * (p - (1 - decay_fraction)) / decay_fraction,
    }[schedule]


def test_the_paper_schedule_warms_up_then_anneals_to_zero():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10)
    assert lr_at(0, cfg, 100) == pytest.approx(1e-4)
    assert lr_at(9, cfg, 100) == pytest.approx(1e-3)
    assert lr_at(55, cfg, 100) == pytest.approx(5e-4)
    assert lr_at(100, cfg, 100) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant", "wsd"])
def test_each_schedule_follows_its_formula_at_every_step_through_a_resume(tmp_path, schedule):
    out = tmp_path / "run"
    options = [
        "--schedule",
        schedule,
        "--lr",
        "1e-3",
        "--min-lr",
        "1e-4",
        "--warmup-steps",
        "2",
        "--max-steps",
        "10",
        "--decay-fraction",
        "0.25",
        "--log-every",
        "1",
        "--eval-every",
        "100",
    ]
    train_here(out, *options, "--stop-after-steps", "4")
    train_here(out, *options, "--resume", "auto")
    logged = {r["step"]: r["lr"] for r in records(out, "train")}
    assert sorted(logged) == list(range(1, 11))
    for step, lr in logged.items():  # the lr logged after update `step` is the one that update used
        assert lr == pytest.approx(expected_lr(schedule, step - 1), rel=1e-12), step


def test_min_lr_above_lr_is_one_line():
    from launch.errors import UserError

    with pytest.raises(UserError, match=r"--min-lr 0\.01 is above --lr 0\.001"):
        TrainConfig(lr=1e-3, min_lr=1e-2)


@pytest.mark.slow  # trains for seconds
def test_a_wsd_run_extended_before_its_decay_redoes_none_of_it(tmp_path):
    """Planned for 10 steps, paused at 4 (still in its stable phase), resumed for 20: every record equals
    a run planned for 20 from the start, so nothing trained before the extension is wasted."""
    wsd = ("--schedule", "wsd", "--lr", "1e-3", "--min-lr", "1e-4", "--warmup-steps", "2", "--decay-fraction", "0.25")
    common = (*wsd, "--log-every", "1", "--eval-every", "100", "--epochs", "8")
    train_here(tmp_path / "planned", *common, "--max-steps", "20")
    train_here(tmp_path / "extended", *common, "--max-steps", "10", "--stop-after-steps", "4")
    train_here(tmp_path / "extended", *common, "--max-steps", "20", "--resume", "auto")
    assert outcome(tmp_path / "extended") == outcome(tmp_path / "planned")
    lrs = [r["lr"] for r in records(tmp_path / "planned", "train")]
    assert lrs[:4] == [5e-4, 1e-3, 1e-3, 1e-3] and lrs[-1] < 1e-3  # warmup, stable, and a decay at the end


# ---- --optimizer muon ---------------------------------------------------------------------------------
def test_muon_owns_the_blocks_matrices_and_adamw_the_rest():
    import torch

    from gpt_core import GPT, get_preset
    from launch.training.optim import MuonWithAdamW, build_optimizer

    model = GPT(get_preset("llama-small").replace(n_layer=2, tie_embeddings=False))
    optimizer = build_optimizer(model, TrainConfig(optimizer="muon", lr=1e-3, muon_lr=0.02), torch.device("cpu"))
    assert isinstance(optimizer, MuonWithAdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    owned = lambda opt: {names[id(p)] for g in opt.param_groups for p in g["params"]}
    muon, adamw = owned(optimizer.muon), owned(optimizer.adamw)
    assert muon == {f"blocks.{i}.{m}.weight" for i in range(2) for m in ("attn.qkv", "attn.proj", "ffn.up", "ffn.down")}
    assert adamw == set(names.values()) - muon and "embed.weight" in adamw and "head.weight" in adamw
    assert all("norm" in n or n in ("embed.weight", "head.weight") for n in adamw)  # no biases here
    # one optimizer to the loop: its groups are the two optimizers' own, AdamW's first (its lr is logged)
    assert optimizer.param_groups[0] is optimizer.adamw.param_groups[0]
    assert [g["lr_scale"] for g in optimizer.param_groups] == [1.0, 1.0, pytest.approx(20.0)]
    assert TrainConfig(optimizer="adamw").optimizer == "adamw" and not isinstance(
        build_optimizer(model, TrainConfig(), torch.device("cpu")), MuonWithAdamW
    )


@pytest.mark.slow  # trains for seconds
def test_a_muon_run_resumes_bit_for_bit_at_its_own_learning_rate(tmp_path, llama_run, story_tokenizer):
    """The Llama-style tiny model with Muon, paused at step 4 and resumed: every record equals the run
    straight through (llama_run); Muon's lr follows the schedule at --muon-lr."""
    import torch

    common = ("--model-config", llama_config(tmp_path), "--tokenizer", story_tokenizer, *LLAMA_RUN)
    train_here(tmp_path / "resumed", *common, "--stop-after-steps", "4")
    train_here(tmp_path / "resumed", *common, "--resume", "auto")
    assert outcome(tmp_path / "resumed") == outcome(llama_run)
    state = next((tmp_path / "resumed" / "checkpoints").glob("step-*4")) / "state" / "optimizer.bin"
    saved = torch.load(state, weights_only=False)
    lrs = [saved[kind]["param_groups"][0]["lr"] for kind in ("muon", "adamw")]
    assert set(saved) == {"adamw", "muon"} and lrs[0] / lrs[1] == pytest.approx(10.0)  # 0.03 / 3e-3
