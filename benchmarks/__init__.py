"""Repository benchmarks: comparisons that need the repository itself (its git history, ../shared,
the paper's recipe as written). Not installed with the package; run them from the repository root."""
