"""README.md and docs/*.md stay honest: every test they cite exists, every relative link and anchor
resolves, and every `gpt-launch`, recipe and `accelerate launch` command in their shell blocks parses
with the real command line (an unknown flag fails). In-process; nothing is run."""

import argparse
import ast
import contextlib
import importlib.util
import io
import re
import shlex
from pathlib import Path

import click

from launch.cli import cli, train_command

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
SHELL = {"bash", "sh", "shell", "console"}


def text_outside_code(page: Path) -> str:
    return FENCE.sub("", page.read_text())


# ---- cited tests -------------------------------------------------------------------------------------
CITATION = re.compile(r"(test_\w+\.py)::(\w+)")  # optionally after a path, optionally before [param]
BARE_NAME = re.compile(r"`(?:::)?(test_\w+)`")  # `test_name`, or `::test_name` after a cited file
FILE_NAME = re.compile(r"\b(test_\w+\.py)\b")


def defined_tests() -> dict[str, set[str]]:
    """{file name: the functions and classes it defines}, for every test file under tests/."""
    defined: dict[str, set[str]] = {}
    for path in (REPO / "tests").rglob("test_*.py"):
        nodes = ast.walk(ast.parse(path.read_text()))
        kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        defined.setdefault(path.name, set()).update(n.name for n in nodes if isinstance(n, kinds))
    return defined


def test_every_cited_test_exists():
    defined = defined_tests()
    anywhere = set().union(*defined.values())
    missing = []
    for page in PAGES:
        text = page.read_text()
        missing += [f"{page.name}: {f}::{n}" for f, n in CITATION.findall(text) if n not in defined.get(f, ())]
        missing += [f"{page.name}: {n}" for n in BARE_NAME.findall(text) if n not in anywhere]
        missing += [f"{page.name}: {f}" for f in FILE_NAME.findall(text) if f not in defined]
    assert not missing, "cited but not defined under tests/:\n" + "\n".join(missing)


# ---- links and anchors -------------------------------------------------------------------------------
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation but hyphens dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, count = set(), {}
    for heading in re.findall(r"^#{1,6} (.+)$", text_outside_code(page), re.M):
        base = slug(heading)  # a repeated heading's anchor gets -1, -2, ...
        found.add(f"{base}-{count[base]}" if base in count else base)
        count[base] = count.get(base, 0) + 1
    return found


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for page in PAGES:
        for target in LINK.findall(text_outside_code(page)):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and (file.suffix != ".md" or anchor not in anchors(file)):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


# ---- commands ----------------------------------------------------------------------------------------
def shell_commands(page: Path):
    """The commands of the page's shell blocks: continuation lines joined, `&&` chains split, comments
    and prompts dropped, placeholders ($VAR, $((...)), <name>, ...) filled in."""
    for language, block in FENCE.findall(page.read_text()):
        if language not in SHELL:
            continue
        for line in re.split(r"\n| && ", block.replace("\\\n", " ")):
            line = re.sub(r"\$\(\([^)]*\)\)|\$\{?\w+\}?", "1", line.strip().removeprefix("$ "))
            words = [w for w in shlex.split(re.sub(r"<[^>]*>", "x", line), comments=True) if w != "..."]
            while words and re.match(r"\w+=", words[0]):  # WANDB_MODE=offline gpt-launch ...
                words.pop(0)
            if words:
                yield line, words


def cli_context(args: list[str]) -> click.Context:
    """`gpt-launch ARGS` parsed, down to its (sub)command, without running it."""
    command, parent, name = cli, click.Context(cli, info_name="gpt-launch"), "gpt-launch"
    while isinstance(command, click.Group):
        if not args:
            return parent  # a group alone prints its help
        name, *args = args
        command = command.get_command(parent, name)
        if command is None:
            raise click.UsageError(f"no such command {name!r}")
    context = command.make_context(name, args, parent=parent)
    if name == "sweep":  # the flags a sweep does not know are train's
        train_command().make_context("train", list(context.params["train_args"]))
    return context


def recipe_context(script: str, args: list[str]) -> click.Context:
    spec = importlib.util.spec_from_file_location(Path(script).stem, REPO / script)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)  # defines RECIPE; the command runs only under __main__
    return train_command(recipe.RECIPE, name=Path(script).stem).make_context(script, args)


def accelerate_launch(args: list[str]) -> argparse.Namespace:
    from accelerate.commands.launch import launch_command_parser

    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        try:
            return launch_command_parser().parse_args(args)
        except SystemExit:
            raise click.UsageError(errors.getvalue().strip().splitlines()[-1]) from None


def parse(words: list[str]) -> bool:
    """Parse a command of ours; False for a command that is not ours (pip, wandb, lm_eval, sbatch)."""
    if words[0] == "gpt-launch":
        cli_context(words[1:])
    elif words[:3] in (["python", "-m", "launch.cli"], ["python3", "-m", "launch.cli"]):
        cli_context(words[3:])
    elif words[0] in ("python", "python3") and words[1:2] and words[1].startswith("recipes/"):
        recipe_context(words[1], words[2:])
    elif words[:2] == ["accelerate", "launch"]:
        launched = accelerate_launch(words[2:])
        if launched.module and launched.training_script == "launch.cli":
            cli_context(launched.training_script_args)
        elif launched.training_script.startswith("recipes/"):
            recipe_context(launched.training_script, launched.training_script_args)
        else:
            return False
    else:
        return False
    return True


def test_every_documented_command_parses():
    failures, parsed = [], 0
    for page in PAGES:
        for line, words in shell_commands(page):
            if "--help" in words or "-h" in words:
                continue
            try:
                parsed += parse(words)
            except click.ClickException as e:
                failures.append(f"{page.name}: {line}\n    {e.format_message()}")
    assert not failures, "\n".join(failures)
    assert parsed >= 20, f"only {parsed} commands found: is the block parser still finding them?"


# ---- shape -------------------------------------------------------------------------------------------
def test_the_readme_is_one_screen_and_links_every_page():
    assert len(README.read_text().splitlines()) <= 300
    pages = sorted((REPO / "docs").glob("*.md"))
    assert len(pages) >= 6
    linked = {(REPO / target.partition("#")[0]).resolve() for target in LINK.findall(README.read_text())}
    unlinked = [p.name for p in pages if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"
