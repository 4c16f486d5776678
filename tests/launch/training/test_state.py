"""launch/training/state.py: the loop's state objects, and the components that say when they act."""

import json
import time

import pytest
import torch

from gpt_core import IGNORE_INDEX
from launch.training.state import (
    COMPLETED,
    Checkpointing,
    EarlyStopping,
    LossWindow,
    StopKind,
    StopReason,
    TokenCount,
    TrainerState,
    Validation,
)


@pytest.fixture  # per test: another test may reset Accelerate's one state per process
def accelerator():
    from launch.runtime.accelerator import make_accelerator

    return make_accelerator(cpu=True)


def test_trainer_state_round_trips_and_reads_older_checkpoints():
    state = TrainerState(step=7, epoch=1, batch_in_epoch=3, tokens=900, finished=None)
    again = TrainerState()
    again.load_state_dict(json.loads(json.dumps(state.state_dict())))
    assert again == state
    old = {"step": 4, "epoch": 0, "batch_in_epoch": 8, "tokens": 512, "best_val_loss": 3.0, "resumed_from": None}
    again.load_state_dict(old)  # a checkpoint from before `finished` existed
    assert (again.step, again.tokens, again.finished) == (4, 512, None)


def test_the_epoch_rolls_over_at_its_last_batch_and_only_there():
    state = TrainerState()
    ends = [state.count_batch(batches_per_epoch=3) for _ in range(7)]
    assert ends == [False, False, True, False, False, True, False]
    assert (state.epoch, state.batch_in_epoch) == (2, 1)


def test_early_stopping_counts_evaluations_without_improvement(accelerator):
    early = EarlyStopping(patience=2)
    assert early.update({"loss": 3.0}, step=10) is True
    assert early.update({"loss": 2.5}, step=20) is True and early.best_step == 20
    assert early.update({"loss": 2.6}, step=30) is False and not early.should_stop(accelerator)
    assert early.update({"loss": 2.5}, step=40) is False  # equal is not better
    assert early.should_stop(accelerator)
    accelerator.check_trigger()  # the trigger is read once; leave it clear for other tests
    assert str(early.reason()) == "early stopping: no validation improvement in 2 evaluations"
    restored = EarlyStopping(patience=2)
    restored.load_state_dict(json.loads(json.dumps(early.state_dict())))
    assert restored == early
    restored.load_state_dict({"step": 3})  # a checkpoint saved before any evaluation
    assert restored.best_val_loss is None and restored.evals_without_improvement == 0


def test_stop_reasons_are_typed_finished_or_paused():
    assert COMPLETED.finished and str(COMPLETED) == "completed"
    assert EarlyStopping(patience=3).reason().finished
    assert not StopReason(StopKind.SESSION_LIMIT, "paused at step 4").finished
    assert not StopReason(StopKind.SIGNAL, "SIGTERM received").finished


def test_components_say_when_they_act():
    assert [s for s in range(1, 13) if Validation(every=4).should_run(s, epoch_end=False, last_step=False)] == [
        4,
        8,
        12,
    ]
    assert Validation(every=None).should_run(5, epoch_end=True, last_step=False)
    assert Validation(every=None).should_run(5, epoch_end=False, last_step=True)
    assert not Validation(every=None).should_run(5, epoch_end=False, last_step=False)
    assert [s for s in range(1, 7) if Checkpointing(every=3).should_save(s, epoch_end=False, stopping=False)] == [3, 6]
    assert Checkpointing(every=None).should_save(1, epoch_end=False, stopping=True)
    assert not Checkpointing(every=None).should_save(1, epoch_end=False, stopping=False)


def test_padded_tokens_are_counted_on_the_device_and_skipped_updates_drop_theirs(accelerator):
    count, state = TokenCount(accelerator, packed=False), TrainerState()
    y = torch.tensor([[5, 6, IGNORE_INDEX, IGNORE_INDEX], [7, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])
    count.add(y)
    count.add(y)
    count.end_update(applied=True)  # 2 x 3 real targets
    count.add(y)
    count.end_update(applied=False)  # an fp16 overflow: its tokens were not trained on
    assert state.tokens == 0, "nothing is read back before settle"
    count.settle(state)
    assert state.tokens == 6
    count.settle(state)
    assert state.tokens == 6, "settling twice counts nothing twice"


def test_packed_tokens_are_every_position_of_every_process(accelerator):
    count, state = TokenCount(accelerator, packed=True), TrainerState(tokens=10)
    count.add(torch.zeros(2, 8, dtype=torch.long))
    count.end_update(applied=True)
    count.settle(state)
    assert state.tokens == 10 + 16 * accelerator.num_processes


def test_loss_window_means_over_micro_batches_and_restarts(accelerator):
    window = LossWindow(torch.device("cpu"), tokens=100)
    for loss in (2.0, 4.0, 6.0):
        window.add(torch.tensor(loss))
    mean, tokens_per_s = window.read(accelerator, tokens=400)
    assert mean == pytest.approx(4.0) and tokens_per_s > 0
    window.add(torch.tensor(1.0))
    assert window.read(accelerator, tokens=500)[0] == pytest.approx(1.0)


def test_loss_window_leaves_paused_time_out_of_tokens_per_s(accelerator):
    window = LossWindow(torch.device("cpu"), tokens=0)
    time.sleep(0.05)
    with window.paused():  # an evaluation or a checkpoint: not training time
        time.sleep(0.5)
    window.add(torch.tensor(1.0))
    _, tokens_per_s = window.read(accelerator, tokens=1000)
    assert tokens_per_s > 1000 / 0.4  # the 0.5 s pause would have made it under 1000 / 0.55
