"""launch: everything that runs a job around gpt_core (data, the Accelerate loop, checkpoints,
tracking, evaluation, the `gpt-launch` CLI and the Accelerate/DeepSpeed config files)."""
