"""The docs' measured figures, rendered from the JSON the benchmarks wrote (benchmarks/results.py):

    python -m benchmarks.render           # rewrite every rendered part of README.md and docs/*.md
    python -m benchmarks.render --check   # say which part differs from its JSON (exit 1), change nothing

A rendered part of a page stands between `<!-- rendered from benchmarks/results/NAME.json -->` and
`<!-- end rendered -->`; a table row rendered inside a table (where a comment would end the table)
is found by the words it starts with. tests/benchmarks/test_render.py renders each again and
compares it with the page.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from .results import RESULTS

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
REGION = re.compile(r"(<!-- rendered from benchmarks/results/(\w+)\.json -->\n)(.*?)(<!-- end rendered -->)", re.S)
KINDS = {"ours": "**ours** (`gpt_core`)", "paper": "(a) the paper's recipe", "hf_gpt2": "(b) transformers GPT-2"}


def load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def _machine(p: dict) -> str:
    """How and where: the command (its --data shown as DATA: a path on the measuring machine), the
    CPU, torch, the commit and the date."""
    command = re.sub(r"--data \S+", "--data DATA", p["command"])
    return f"`{command}` on {p['cpu']} ({p['cores']} cores), torch {p['torch']}, commit {p['commit'][:10]}, {p['date']}"


def paper_recipe(data: dict) -> str:
    """The training table, evaluation, generation and data preparation of one `paper_recipe` run."""
    p, r = data["provenance"], data["result"]
    samples = len(r["training"]["ours"]["step_tokens_per_s"])
    lines = [
        f"Measured with {_machine(p)}: {r['precision']}, `{r['preset']}` preset, batch {r['batch_size']} x "
        f"accumulation {r['grad_accum']}, context {r['context']}, DATA the {r['data_preparation']['stories']:,} "
        "TinyStories stories (their real lengths), "
        f"{r['matmul_peak_tflops'] * 1e3:,.0f} GFLOP/s measured matmul peak. Each training figure is the median "
        f"of {samples} optimizer steps ({r['rounds']} interleaved rounds of {r['steps']}, each after "
        f"{r['warmup']} untimed); every sample is in the JSON.",
        "",
        "| training | useful tokens/s | MFU | peak RSS | padding | ours is |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, row in r["training"].items():
        speedup = f"**{row['ours_speedup']:.2f}x**" if "ours_speedup" in row else "-"
        lines.append(
            f"| {KINDS.get(kind, kind)} | {row['tokens_per_s']:,.0f} | {row['mfu']:.1%} | "
            f"{row['peak_memory_mb']:,.0f} MB | {row['padding_fraction']:.1%} | {speedup} |"
        )
    chunked, full = r["evaluation"]["eval"], r["evaluation"]["eval_full_logits"]
    g, d = r["generation"], r["data_preparation"]
    lines += [
        "",
        f"- Evaluation through the chunked head: {chunked['tokens_per_s']:,.0f} tokens/s, "
        f"{chunked['vs_training']:.2f}x training's, at {chunked['peak_memory_mb']:,.0f} MB; the full-logits "
        f"evaluation it replaced: {full['tokens_per_s']:,.0f} tokens/s at {full['peak_memory_mb']:,.0f} MB.",
        f"- Generation, {g['tokens']} tokens: {g['cached_tokens_per_s']:,.1f} tokens/s with the KV cache, "
        f"{g['uncached_tokens_per_s']:,.1f} recomputing the prefix ({g['cache_speedup']:.1f}x).",
        f"- Data preparation from scratch: {d['tokens']:,} tokens of {d['stories']:,} stories at "
        f"{d['tokens_per_s'] / 1e6:,.2f} M tokens/s ({d['workers']} worker process{'es' * (d['workers'] != 1)}).",
    ]
    return "\n".join(lines) + "\n"


def readme_rows(data: dict) -> list[str]:
    """README's two rows of the same run, rendered in its table."""
    r = data["result"]
    ours, paper, hf = (r["training"][k] for k in ("ours", "paper", "hf_gpt2"))
    chunked = r["evaluation"]["eval"]
    link = "[Performance](docs/performance.md#measured-on-a-2-core-cpu)"
    return [
        f"| training throughput, `{r['preset']}` preset | {ours['tokens_per_s']:,.0f} useful tokens/s, "
        f"{ours['mfu']:.1%} MFU: **{paper['ours_speedup']:.2f}x** the paper's recipe as written, "
        f"**{hf['ours_speedup']:.2f}x** transformers' GPT-2 | {link} |",
        f"| evaluation through the chunked head | **{chunked['vs_training']:.2f}x** training's tokens/s for "
        f"`{r['preset']}`, at {chunked['peak_memory_mb']:,.0f} MB against {ours['peak_memory_mb']:,.0f} MB | {link} |",
    ]


RENDERERS = {"paper_recipe": paper_recipe}
ROWS = {ROOT / "README.md": [("paper_recipe", readme_rows)]}


def rendered(page: Path, text: str) -> str:
    """`text` (the page) with every rendered part rendered again from its JSON."""
    text = REGION.sub(lambda m: m.group(1) + RENDERERS[m.group(2)](load(m.group(2))) + m.group(4), text)
    for name, rows in ROWS.get(page, []):
        for row in rows(load(name)):
            start = row.split(" | ")[0] + " |"
            text = re.sub(rf"^{re.escape(start)}.*$", lambda _, row=row: row, text, count=1, flags=re.M)
    return text


def main() -> None:
    check = "--check" in sys.argv[1:]
    stale = []
    for page in PAGES:
        text = page.read_text()
        new = rendered(page, text)
        if new != text:
            stale.append(page.relative_to(ROOT))
            if not check:
                page.write_text(new)
    verb = "differs from its JSON" if check else "rendered again"
    for page in stale:
        print(f"{page}: {verb}")
    sys.exit(1 if check and stale else 0)


if __name__ == "__main__":
    main()
