"""`gpt-launch share`: a W&B report built from a real offline W&B run, and the offline fallback."""

import json
import shutil

import pytest

from launch.commands.share import SPEC_NAME, build_report, report_spec
from launch.tracking.wandb_files import wandb_runs
from tests.helpers import PYTHON, invoke, run_cli

pytestmark = pytest.mark.slow
SECRET = "s3cr3t" * 7  # 42 characters, shaped like a W&B key


def test_the_run_file_reader_finds_what_was_logged(wandb_offline_run):
    (run,) = wandb_runs(wandb_offline_run)
    raw = next(run.folder.glob("*.wandb")).read_bytes()
    assert run.run_id in run.folder.name and run.project == "gpt-launch"
    for key in ("train/loss", "train/lr", "train/tokens_per_s", "eval/loss", "eval/accuracy", "test/perplexity"):
        assert run.logged[key] == "number" and key.encode() in raw
    assert run.logged["samples"] == "table-file" and run.logged["curves"].startswith("image")
    assert "eval/no_such_key" not in run.logged


def test_report_panels_refer_only_to_logged_keys(wandb_offline_run):
    import wandb_workspaces.reports.v2 as wr

    (run,) = wandb_runs(wandb_offline_run)
    summary = json.loads((wandb_offline_run / "summary.json").read_text())
    report = build_report(report_spec(wandb_offline_run), entity="someone")
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    panels = [p for g in grids for p in g.panels]
    plotted = [key for p in panels if isinstance(p, wr.LinePlot) for key in p.y]
    assert {"train/loss", "eval/loss", "eval/perplexity", "eval/accuracy", "train/lr", "train/tokens_per_s"} <= set(
        plotted
    )
    assert all(run.logged.get(key) == "number" for key in plotted)
    assert [p.media_keys for p in panels if isinstance(p, wr.MediaBrowser)] == [["curves"]]
    assert [p.table_name for p in panels if isinstance(p, wr.WeavePanelSummaryTable)] == ["samples"]
    assert all(run.run_id in rs.filters and rs.project == "gpt-launch" for g in grids for rs in g.runsets)
    text = "\n".join(getattr(b, "text", "") or getattr(b, "code", "") for b in report.blocks)
    assert f"{summary['test']['perplexity']:.2f}" in text and summary["samples"][0]["text"] in text
    assert summary["hardware"]["device"] in text and json.dumps(summary["config"], indent=2) in text
    assert report.entity == "someone" and str(summary["steps"]) in report.description


def test_share_offline_saves_the_spec_and_says_what_to_run(wandb_offline_run):
    result = invoke("share", wandb_offline_run, env={"WANDB_MODE": "offline"})
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    (run,) = wandb_runs(wandb_offline_run)
    assert f"wandb sync {run.folder}" in result.stderr and f"gpt-launch share {wandb_offline_run}" in result.stderr
    saved = json.loads((wandb_offline_run / SPEC_NAME).read_text())
    assert saved == report_spec(wandb_offline_run) and saved["run_ids"] == [run.run_id]


def test_share_without_network_fails_fast_and_keeps_the_key_secret(wandb_offline_run):
    env = {"WANDB_MODE": "online", "WANDB_API_KEY": SECRET, "WANDB_BASE_URL": "http://127.0.0.1:9"}
    result = run_cli([PYTHON, "-m", "launch.cli", "share", wandb_offline_run], env=env, check=False, timeout=60)
    assert result.returncode == 2 and "cannot reach http://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr
    written = "".join(
        p.read_text(errors="ignore") for p in wandb_offline_run.rglob("*") if p.is_file() and p.suffix == ".json"
    )
    assert SECRET not in result.stdout + result.stderr and SECRET not in written


def test_share_needs_a_wandb_run(wandb_offline_run, tmp_path):
    shutil.copy(wandb_offline_run / "summary.json", tmp_path / "summary.json")
    result = invoke("share", tmp_path)
    assert result.exit_code == 2 and "has no W&B run" in result.stderr and "--tracker wandb" in result.stderr
