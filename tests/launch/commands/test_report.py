"""launch/commands/report.py: a run as one Markdown or HTML report."""

import json

from tests.helpers import invoke


def test_report_markdown_and_html(run_dir, tmp_path):
    md = invoke("report", run_dir, "--format", "md", "-o", tmp_path / "r.md")
    assert md.exit_code == 0
    text = (tmp_path / "r.md").read_text()
    assert "![training curves](curves.png)" in text and "Once upon a time" in text and "perplexity" in text
    assert "1 process(es), mixed precision no (fp32)" in text  # the hardware row says what each figure is
    test = json.loads((run_dir / "summary.json").read_text())["test"]
    assert f"| test loss / perplexity / accuracy / bits per byte | {test['loss']:.4f} / " in text
    assert f" / {test['bits_per_byte']:.4f} |" in text  # bits per byte, as the summary holds it
    invoke("report", run_dir)
    html = (run_dir / "report.html").read_text()
    assert html.startswith("<!doctype html>") and "data:image/png;base64,iVBORw0KGgo" in html  # an embedded real PNG
    assert "parameters" in html and "The brave knight" in html
    missing = invoke("report", tmp_path)
    assert missing.exit_code == 2 and "has no summary.json" in missing.stderr
