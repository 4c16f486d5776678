"""`gpt-launch bench`: throughput, MFU, memory, evaluation, generation and data preparation on this device."""
