"""Benchmark code, kept apart from the product: `gpt-launch bench` and the baselines it measures against."""
