"""launch/checkpoint.py: a checkpoint is the same whatever wraps the model that writes or reads it."""

import torch

from gpt_core import GPT, load_pretrained
from launch.checkpoints.folders import step_checkpoints
from launch.checkpoints.restoring import load_training_state, plain_model
from launch.checkpoints.saving import store_weights_once
from launch.runtime import make_accelerator
from launch.settings.config import TrainConfig
from launch.training.optim import build_optimizer


def test_a_checkpoint_resumes_into_a_compiled_wrapper(paused_run):
    """Accelerate launched with a dynamo backend wraps the model in torch.compile's OptimizedModule,
    whose keys are `_orig_mod.<name>`: the checkpoint's plain names load into the model inside it."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    step = step_checkpoints(paused_run)[-1]
    saved = load_pretrained(step)
    accelerator = make_accelerator()
    model = GPT(saved.config)
    wrapped = torch.compile(model)  # nothing is compiled until it runs
    optimizer = build_optimizer(wrapped, TrainConfig(), accelerator.device)
    store_weights_once(accelerator)
    wrapped, optimizer = accelerator.prepare(wrapped, optimizer)
    load_training_state(accelerator, wrapped, step)
    assert plain_model(accelerator, wrapped) is model
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.state_dict().items())
