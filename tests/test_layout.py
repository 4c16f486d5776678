"""The codebase's own limits: a module stays under 600 lines and a function under 60, and the
installed package reads nothing from the repository (its git history, ../shared)."""

import ast

import pytest

from tests.helpers import REPO

PACKAGES = ("gpt_core", "launch")
SOURCES = sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_modules_and_functions_stay_small(path):
    text = path.read_text()
    assert len(text.splitlines()) <= 600, f"{path.name} has {len(text.splitlines())} lines"
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


# The layers of launch/, lowest first: a package imports only from its own layer's helpers and the
# layers below it (gpt_core is below them all). What sits where is the architecture docs/development.md shows.
LAYERS = {
    "launch.errors": 0,
    "launch.progress": 0,
    "launch.runtime": 1,
    "launch.checkpoints": 2,
    "launch.settings": 3,
    "launch.data": 4,
    "launch.tracking": 4,
    "launch.training": 5,
    "launch.bench": 6,
    "launch.commands": 7,
    "launch.cli": 8,
}


def _layer(module: str) -> tuple[str, int]:
    home = next(h for h in LAYERS if module == h or module.startswith(h + "."))
    return home, LAYERS[home]


def _imports(path) -> set[str]:
    """The launch modules `path` imports, at its top or inside a function, relative ones resolved."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found |= {module} if node.module else {f"{module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.startswith("launch.") or m == "launch"} - {"launch"}


def test_launch_imports_only_downward_and_its_top_stays_small():
    top = sorted(p.name for p in (REPO / "launch").glob("*.py"))
    assert len(top) <= 8, top
    assert len((REPO / "launch" / "cli.py").read_text().splitlines()) <= 250
    for path in sorted((REPO / "launch").rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        if module == "launch":
            continue
        home, level = _layer(module)
        for imported in _imports(path):
            there, their_level = _layer(imported)
            assert there == home or their_level < level, f"{module} ({home}) imports {imported} ({there}) from above"


def test_no_two_launch_modules_import_each_other():
    modules = {
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
        for p in (REPO / "launch").rglob("*.py")
    }
    imports = {m: _imports(p) for m, p in modules.items()}
    for module, imported in imports.items():
        for other in imported & set(imports):
            assert module not in imports[other], f"{module} and {other} import each other"
