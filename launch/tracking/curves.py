"""curves.png: a run's learning curves from its metrics.jsonl records."""

from __future__ import annotations

from pathlib import Path


def plot_curves(records: list[dict], path: Path) -> Path:
    """Loss, perplexity and accuracy, by optimizer step (left) and by epoch (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    epoch_end = [r for r in evals if r.get("epoch_end")]
    # Fixed margins: a constrained layout costs a second per plot, more than the plot itself.
    fig, axes = plt.subplots(3, 2, figsize=(11, 10))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.06, top=0.96, hspace=0.4, wspace=0.22)
    for row, (metric, label) in enumerate(
        [("loss", "loss"), ("perplexity", "perplexity"), ("accuracy", "token accuracy")]
    ):
        by_step, by_epoch = axes[row]
        if train and metric in train[0]:
            by_step.plot([r["step"] for r in train], [r[metric] for r in train], label="train", alpha=0.8)
        if evals:
            by_step.plot([r["step"] for r in evals], [r[metric] for r in evals], "o-", label="validation")
        if epoch_end:
            by_epoch.plot([r["epoch"] + 1 for r in epoch_end], [r[metric] for r in epoch_end], "o-", label="validation")
            train_epochs = {}
            for r in train:
                train_epochs.setdefault(r["epoch"] + 1, []).append(r.get(metric))
            xs = [e for e, v in train_epochs.items() if None not in v]
            if xs:
                by_epoch.plot(
                    xs, [sum(train_epochs[e]) / len(train_epochs[e]) for e in xs], "s--", label="train (mean)"
                )
        if metric == "perplexity":
            by_step.set_yscale("log"), by_epoch.set_yscale("log")
        by_step.set(xlabel="optimizer step", ylabel=label, title=f"{label} by step")
        by_epoch.set(xlabel="epoch", ylabel=label, title=f"{label} by epoch")
        for ax in (by_step, by_epoch):
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)
