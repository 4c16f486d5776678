"""The commands run on a finished (or running) run: evaluate, generate, info, export, share, report."""
