"""The machine a run lands on, by concern: the Accelerator (accelerator.py), devices (devices.py),
precision and CPU bf16 (precision.py), and what processes share (processes.py: signals, ranks)."""
