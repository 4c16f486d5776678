"""`gpt-launch share RUN`: a W&B Report built from a finished run, with W&B's own Reports API.

    the run's W&B files (run/offline-run-*/*.wandb)  ->  the keys it really logged
    summary.json + those keys                        ->  a report specification (plain JSON, saved
                                                         beside the run as wandb_report.json)
    specification + entity                           ->  wandb_workspaces Report -> save() -> URL

The specification is written first, always, so that an offline machine loses nothing: it says
which panels the report will hold, and `gpt-launch share RUN` publishes it once the run is synced.
Every check that needs the network has a short timeout; the API key is never printed or stored.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from gpt_core.errors import first_line
from gpt_core.files import write_json
from launch.errors import UserError
from launch.tracking.summary import RunSummary
from launch.tracking.wandb_files import wandb_runs

from .report import markdown_table

SPEC_NAME = "wandb_report.json"
# The line plots, each drawn from the keys of these names that the run actually logged.
PLOTS = {
    "loss": ("train/loss", "eval/loss"),
    "perplexity": ("train/perplexity", "eval/perplexity"),
    "token accuracy": ("eval/accuracy",),
    "bits per byte": ("eval/bits_per_byte",),
    "learning rate": ("train/lr",),
    "tokens/s": ("train/tokens_per_s",),
}
NETWORK_TIMEOUT_S = 10


def report_spec(run_dir: Path, entity: str | None = None) -> dict:
    """What the report holds, as plain JSON: panels refer only to keys the run logged."""
    run_dir = Path(run_dir)
    summary, runs = RunSummary.load(run_dir), wandb_runs(run_dir)
    logged = {key: kind for run in runs for key, kind in run.logged.items()}
    test = summary.test or {}
    name = summary.config.get("run_name") or run_dir.name
    plots = [
        {"kind": "line", "title": title, "y": [k for k in keys if logged.get(k) == "number"]}
        for title, keys in PLOTS.items()
    ]
    panels = [p for p in plots if p["y"]]
    panels += [
        {"kind": "media", "title": "training curves", "keys": [k]} for k, t in logged.items() if t.startswith("image")
    ]
    panels += [{"kind": "table", "title": "sample stories", "key": k} for k, t in logged.items() if t == "table-file"]
    samples = "\n\n".join(f"**{s['prompt']}**{s['text']}" for s in summary.samples)
    hardware = summary.hardware
    return {
        "entity": entity or next((r.entity for r in runs if r.entity), None),
        "project": runs[-1].project,
        "run_ids": list(dict.fromkeys(r.run_id for r in runs)),  # one id since runs resume theirs; older runs: several
        "run_folders": [str(r.folder) for r in runs],
        "title": f"{name}: a {summary.model['parameters'] / 1e6:.1f}M-parameter GPT on TinyStories",
        "description": (
            f"Test perplexity {test.get('perplexity', float('nan')):.2f}, token accuracy "
            f"{test.get('accuracy', float('nan')):.4f} and bits per byte {test.get('bits_per_byte', float('nan')):.4f} "
            f"after {summary.steps} optimizer steps "
            f"({summary.stop_reason})."
        ),
        "blocks": [
            {"kind": "markdown", "text": "\n".join(markdown_table(summary.rows()))},
            {"kind": "heading", "text": "Training"},
            {"kind": "panels", "panels": panels},
            {"kind": "heading", "text": "Sample stories (best weights)"},
            {"kind": "markdown", "text": samples or "(no samples)"},
            {"kind": "heading", "text": "Hardware"},
            {"kind": "markdown", "text": "\n".join(markdown_table([(k, str(v)) for k, v in hardware.items()]))},
            {"kind": "heading", "text": "Config"},
            {"kind": "code", "language": "json", "text": json.dumps(summary.config, indent=2)},
        ],
    }


def build_report(spec: dict, entity: str):
    """The specification as W&B's own Report object (building it needs no network; saving does)."""
    import wandb_workspaces.reports.v2 as wr

    ids = ", ".join(repr(i) for i in spec["run_ids"])
    runset = wr.Runset(entity=entity, project=spec["project"], name="this run", filters=f"Metric('ID') in [{ids}]")

    def panel(p):
        if p["kind"] == "line":
            return wr.LinePlot(title=p["title"], x="Step", y=p["y"])
        if p["kind"] == "media":
            return wr.MediaBrowser(title=p["title"], media_keys=p["keys"], num_columns=1)
        return wr.WeavePanelSummaryTable(table_name=p["key"], layout=wr.Layout(w=24, h=12))

    def block(b):
        if b["kind"] == "heading":
            return wr.H2(text=b["text"])
        if b["kind"] == "markdown":
            return wr.MarkdownBlock(text=b["text"])
        if b["kind"] == "code":
            return wr.CodeBlock(code=b["text"], language=b["language"])
        return wr.PanelGrid(runsets=[runset], panels=[panel(p) for p in b["panels"]])

    return wr.Report(
        project=spec["project"],
        entity=entity,
        title=spec["title"][:128],
        description=spec["description"],
        blocks=[block(b) for b in spec["blocks"]],
    )


def write_spec(run_dir: Path, spec: dict) -> Path:
    return write_json(Path(run_dir) / SPEC_NAME, spec)


def offline_reason() -> str | None:
    """Why the report cannot be published from here now, or None; never waits long on the network."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "dryrun", "disabled"):
        return f"WANDB_MODE={mode}"
    import wandb

    base = urlparse(os.environ.get("WANDB_BASE_URL") or wandb.Settings().base_url)
    try:  # before wandb.Api(), whose login check waits for its own timeout
        socket.create_connection(
            (base.hostname, base.port or (443 if base.scheme == "https" else 80)), timeout=NETWORK_TIMEOUT_S
        ).close()
    except OSError as e:
        return f"cannot reach {base.scheme}://{base.netloc} ({e.strerror or type(e).__name__})"
    return None


def connect():
    """wandb.Api(), logged in, or a UserError naming the fix."""
    import wandb

    try:
        return wandb.Api(timeout=NETWORK_TIMEOUT_S)
    except wandb.errors.UsageError:
        raise UserError("not logged in to W&B: run `wandb login` (or set WANDB_API_KEY), then share again") from None
    except wandb.errors.Error as e:
        raise UserError(f"W&B did not accept the login ({first_line(e)}); check `wandb login`") from None


def share(run_dir: Path, entity: str | None = None, log=print) -> str:
    """Publish the run's report and return its URL; offline, raise a UserError saying what to run."""
    run_dir = Path(run_dir)
    spec = report_spec(run_dir, entity)
    spec_path = write_spec(run_dir, spec)
    sync = "wandb sync " + " ".join(spec["run_folders"])
    reason = offline_reason()
    if reason:
        raise UserError(
            f"{reason}: the report's specification is saved in {spec_path}; run `{sync}`, "
            f"then `gpt-launch share {run_dir}` again"
        )
    import wandb

    api = connect()
    try:
        entity = spec["entity"] or api.default_entity
        missing = [i for i in spec["run_ids"] if not _on_server(api, f"{entity}/{spec['project']}/{i}")]
    except wandb.errors.Error as e:
        raise UserError(
            f"W&B refused the request ({first_line(e)}); the report's specification is saved in {spec_path}"
        ) from None
    if missing:
        raise UserError(
            f"run {', '.join(missing)} is not on W&B yet (logged offline): run `{sync}`, "
            f"then `gpt-launch share {run_dir}` again"
        )
    spec["entity"] = entity
    write_spec(run_dir, spec)
    try:
        report = build_report(spec, entity).save()
    except (wandb.errors.Error, OSError) as e:
        raise UserError(
            f"W&B did not save the report ({first_line(e)}); the specification is in {spec_path}: share again"
        ) from None
    log(f"share: report saved; specification in {spec_path}")
    return report.url


def _on_server(api, path: str) -> bool:
    import wandb

    try:
        api.run(path)
        return True
    except wandb.errors.CommError as e:
        if "404" in str(e) or "not found" in str(e).lower() or "Could not find run" in str(e):
            return False
        raise
