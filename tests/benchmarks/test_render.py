"""benchmarks/render.py: every measured figure the docs render stands as its JSON in
benchmarks/results/ says, and each JSON says how and where it was measured."""

import copy
import json

import pytest

from benchmarks.render import PAGES, REGION, RENDERERS, load, rendered
from benchmarks.results import RESULTS

PROVENANCE = {"command", "cpu", "cores", "torch", "commit", "date"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_each_page_shows_what_its_results_render_to(page):
    text = page.read_text()
    assert rendered(page, text) == text, (
        f"{page.name} differs from benchmarks/results/: run python -m benchmarks.render"
    )


def test_the_rendered_parts_name_results_that_exist_and_say_where_they_were_measured():
    names = {m.group(2) for page in PAGES for m in REGION.finditer(page.read_text())}
    assert names and names <= set(RENDERERS), names
    for name in names:
        data = json.loads((RESULTS / f"{name}.json").read_text())
        assert set(data["provenance"]) >= PROVENANCE and data["provenance"]["command"].startswith(
            "python -m benchmarks."
        )
        assert data["result"]["training"]["ours"]["step_tokens_per_s"], "the samples are kept, not only the median"


def test_a_figure_is_read_from_the_json_not_typed():
    data = load("paper_recipe")
    changed = copy.deepcopy(data)
    changed["result"]["training"]["ours"]["tokens_per_s"] += 1000
    assert RENDERERS["paper_recipe"](changed) != RENDERERS["paper_recipe"](data)
