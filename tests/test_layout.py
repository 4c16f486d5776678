"""The codebase's own limits: a module stays under 400 lines and a function under 60, and the
installed package reads nothing from the repository (its git history, ../shared)."""

import ast

import pytest

from tests.helpers import REPO

PACKAGES = ("gpt_core", "launch")
SOURCES = sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_modules_and_functions_stay_small(path):
    text = path.read_text()
    assert len(text.splitlines()) <= 400, f"{path.name} has {len(text.splitlines())} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            assert length <= 60, f"{path.name}: {node.name} has {length} lines"


def test_the_package_reads_nothing_of_the_repository():
    for path in SOURCES:
        text = path.read_text()
        # a git call, a path built to ../shared, an import of the repository's benchmarks
        for needle in ('"git"', '"shared"', "../shared", "import benchmarks", "from benchmarks"):
            assert needle not in text, f"{path.relative_to(REPO)} mentions {needle!r}"
    assert not (REPO / "launch" / "bench" / "data.py").exists()
