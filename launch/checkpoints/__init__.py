"""Checkpoints: saving a run atomically, restoring it, and finding and loading weights for
`--init-from` and the commands."""
