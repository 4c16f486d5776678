"""A sweep's report, written into SWEEP/report/: the best trial and the command that reruns it, a
table of every trial, and three plots (the optimisation history, each setting's importance, and
every trial's validation curve on one axis), as PNGs, report.md and one self-contained report.html.
"""

from __future__ import annotations

import base64
import html
import json
import warnings
from pathlib import Path

from gpt_core.files import write_atomically, write_json
from launch.errors import UserError

SWEEP_FILE = "sweep.json"  # the sweep's record: space, fixed flags, the study's name and storage


def load_sweep_study(folder: Path, storage: str | None = None, study_name: str | None = None):
    import optuna

    from launch.training.trial import open_storage

    record_file = folder / SWEEP_FILE
    if not record_file.exists():
        raise UserError(f"{folder} holds no sweep ({SWEEP_FILE} is missing); pass the sweep's --output-dir")
    record = json.loads(record_file.read_text())
    url = storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    try:
        return optuna.load_study(study_name=study_name or record["study"], storage=open_storage(url))
    except KeyError:
        raise UserError(f"no study {record['study']!r} in {url}; pass the sweep's --storage and --study-name") from None


def trial_rows(study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": t.value,
                "params": t.params,
                "last_step": max(t.intermediate_values, default=None),
                "run_dir": t.user_attrs.get("run_dir"),
                "command": t.user_attrs.get("command"),
            }
        )
    return rows


def curves(rows: list[dict]) -> dict[int, list[tuple[int, float]]]:
    """Each trial's validation curve (step, objective), read from its own run folder."""
    out = {}
    for row in rows:
        metrics = Path(row["run_dir"] or "") / "metrics.jsonl"
        if row["run_dir"] and metrics.exists():
            records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
            out[row["number"]] = [
                (r["step"], r.get("bits_per_byte", r["loss"])) for r in records if r["kind"] == "eval"
            ]
    return out


def plot(rows: list[dict], importances: dict, curve_map: dict, folder: Path, objective: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    finished = [r for r in rows if r["value"] is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter([r["number"] for r in finished], [r["value"] for r in finished], label="trial")
    best, running = [], float("inf")
    for r in finished:
        running = min(running, r["value"])
        best.append(running)
    ax.step([r["number"] for r in finished], best, where="post", color="C1", label="best so far")
    pruned = [r for r in rows if r["state"] == "pruned"]
    ax.set(xlabel="trial", ylabel=f"best validation {objective}", title=f"optimisation history ({len(pruned)} pruned)")
    ax.legend()
    paths.append(_save(fig, folder / "history.png"))
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.5 * max(1, len(importances))))
    ax.barh(list(importances), list(importances.values()))
    ax.set(xlabel="importance (fANOVA)", title="which settings mattered")
    paths.append(_save(fig, folder / "importance.png"))
    fig, ax = plt.subplots(figsize=(7, 4))
    for number, points in curve_map.items():
        if points:
            ax.plot(*zip(*points, strict=True), marker=".", label=f"trial {number}")
    ax.set(xlabel="optimizer step", ylabel="validation bits per byte", title="every trial's validation curve")
    if len(curve_map) <= 12:
        ax.legend(fontsize=7)
    paths.append(_save(fig, folder / "curves.png"))
    plt.close("all")
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def write_sweep_report(sweep_folder: Path, study) -> Path:
    import optuna

    folder = Path(sweep_folder) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    objective = json.loads((Path(sweep_folder) / SWEEP_FILE).read_text())["objective"]
    rows = trial_rows(study)
    finished = [r for r in rows if r["state"] == "complete"]
    importances = {}
    if len(finished) >= 2 and study.best_trial.params:
        try:
            with warnings.catch_warnings():  # "quantiles select the same trials": equal importances, said by the plot
                warnings.simplefilter("ignore")
                importances = optuna.importance.get_param_importances(study)
        except (ValueError, RuntimeError):  # too few distinct values to tell
            importances = {}
    images = plot(rows, importances, curves(rows), folder, objective)
    best = min(finished, key=lambda r: r["value"]) if finished else None
    lines = [f"# Sweep {study.study_name}", ""]
    if best:
        lines += [
            f"Best: trial {best['number']}, validation {objective} {best['value']:.4f}",
            "",
            "```",
            best["command"],
            "```",
            "",
        ]
    lines += [
        "| trial | state | " + f"validation {objective} | last validated step | settings |",
        "|---:|---|---:|---:|---|",
    ]
    for r in rows:
        value = "" if r["value"] is None else f"{r['value']:.4f}"
        settings = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())
        lines.append(f"| {r['number']} | {r['state']} | {value} | {r['last_step'] or ''} | {settings} |")
    lines += ["", *(f"![{p.stem}]({p.name})" for p in images), ""]
    markdown = "\n".join(lines)
    write_atomically(folder / "report.md", markdown)
    write_json(folder / "trials.json", {"best": best, "trials": rows, "importance": importances})
    page = html_page(study.study_name, objective, best, rows, images)
    write_atomically(folder / "report.html", page)
    return folder


def html_page(name: str, objective: str, best: dict | None, rows: list[dict], images: list[Path]) -> str:
    """One self-contained page: the best trial, the table, the plots embedded."""
    embedded = "".join(
        f"<img alt='{p.stem}' src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'>" for p in images
    )
    head = ["trial", "state", f"validation {objective}", "last validated step", "settings"]
    cells = [
        [str(r["number"]), r["state"], "" if r["value"] is None else f"{r['value']:.4f}", str(r["last_step"] or "")]
        + [", ".join(f"{k}={v}" for k, v in r["params"].items())]
        for r in rows
    ]
    table = "<table border=1 cellpadding=4><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
    table += (
        "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells) + "</table>"
    )
    best_html = (
        f"<p>Best: trial {best['number']}, validation {objective} {best['value']:.4f}</p>"
        f"<pre>{html.escape(best['command'])}</pre>"
        if best
        else "<p>No trial has finished yet.</p>"
    )
    title = f"Sweep {html.escape(name)}"
    page = f"<!doctype html><meta charset='utf-8'><title>{title}</title><h1>{title}</h1>{best_html}{table}{embedded}"
    return page
