"""Training curves as a PNG, and a self-contained run report (Markdown or HTML)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from gpt_core.files import write_atomically
from launch.errors import UserError, check_writable
from launch.tracking.curves import plot_curves
from launch.tracking.summary import RunSummary
from launch.tracking.trackers import read_metrics


def markdown_table(rows: list[tuple[str, str]]) -> list[str]:
    return ["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]


def write_report(run_dir: Path, fmt: str, output: str | None = None) -> Path:
    """`gpt-launch report`: RUN/report.md|html, or `output`."""
    out = Path(output) if output else Path(run_dir) / f"report.{fmt}"
    if output is not None:
        check_writable(output, "--output", "file")
    write_atomically(out, render_report(Path(run_dir), fmt))
    return out


def render_report(run_dir: Path, fmt: str = "md") -> str:
    """The report's text. Markdown links the curves PNG beside it; HTML embeds it (one file to share)."""
    run_dir = Path(run_dir)
    s = RunSummary.load(run_dir)
    curves = run_dir / "curves.png"
    if not curves.exists():
        plot_curves(read_metrics(run_dir), curves)
    rows = s.rows()
    title = f"Run report: {run_dir.name}"
    config_json = json.dumps(s.config, indent=2)
    if fmt == "md":
        lines = [
            f"# {title}",
            "",
            *markdown_table(rows),
            "",
            "## Training curves",
            "",
            f"![training curves]({curves.name})",
            "",
            "## Sample stories",
            "",
        ]
        for sample in s.samples:
            lines += [f"**{sample['prompt']}**{sample['text']}", ""]
        lines += ["## Config", "", "```json", config_json, "```", ""]
        return "\n".join(lines)
    if fmt != "html":
        raise UserError(f"--format must be md or html, got {fmt!r}")
    image = base64.b64encode(curves.read_bytes()).decode()
    esc = html.escape
    table = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in rows)
    samples = "".join(f"<p><b>{esc(x['prompt'])}</b>{esc(x['text'])}</p>" for x in s.samples)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}th{text-align:left;padding-right:1em}"
        "p{white-space:pre-wrap}</style></head><body>"
        f"<h1>{esc(title)}</h1><table>{table}</table><h2>Training curves</h2>"
        f"<img alt='training curves' src='data:image/png;base64,{image}'><h2>Sample stories</h2>{samples}"
        f"<h2>Config</h2><pre>{esc(config_json)}</pre></body></html>"
    )
