"""What a run records: metrics.jsonl, W&B and TensorBoard, the typed run summary, and W&B's offline
files read back."""
