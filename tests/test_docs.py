"""README.md and docs/*.md stay true to the code: the generated tables match what generates them, every relative link
and repository path resolves, every `lrnbn ...` command shown exists with the options shown, and the facts copied
from the code (exit codes, machine keys, run files, the package's modules) are the code's."""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from lrnbn import errors
from lrnbn.cli import app

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 200


def _load_doc_tables():
    spec = importlib.util.spec_from_file_location("doc_tables", REPO / "scripts" / "doc_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


doc_tables = _load_doc_tables()

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)


def code_blocks(text: str) -> list[str]:
    return FENCE.findall(text)


def prose(text: str) -> str:
    """The text without its fenced code blocks (each left as an empty line, so paragraphs stay apart)."""
    return FENCE.sub("\n", text)


def flat(text: str) -> str:
    return " ".join(text.split())


def read(name: str) -> str:
    return (REPO / name).read_text()


def page_id(path: Path) -> str:
    return str(path.relative_to(REPO))


# --- generated tables -------------------------------------------------------------------------------------------


def test_config_reference_in_docs_is_the_schemas():
    from lrnbn.config import reference_markdown

    expected = reference_markdown()
    assert expected in read("docs/config.md"), "docs/config.md's reference is stale: paste `lrnbn config reference`"


def test_study_file_keys_in_docs_are_the_study_schemas():
    expected = doc_tables.study_file_table()
    assert expected in read("docs/studies.md"), (
        "docs/studies.md's study-file table is stale; paste `python scripts/doc_tables.py study-file`:\n" + expected
    )


def test_claims_constants_in_docs_are_the_codes():
    doc = read("docs/claims.md")
    rows = doc_tables.constants_table_rows(doc)
    for name, where, value, meaning in rows:
        module = where.removesuffix(".py")
        assert (REPO / "lrnbn" / where).is_file(), f"docs/claims.md: {name} is said to be in lrnbn/{where}"
        values = vars(__import__(f"lrnbn.{module}", fromlist=["_"]))
        assert name in values, f"docs/claims.md lists {name}, which lrnbn/{where} does not define"
        assert value == doc_tables.show_value(values[name]), f"docs/claims.md: {name} is {values[name]!r} in the code"
        assert meaning and meaning != "(to write)", f"docs/claims.md: {name} has no meaning"
    listed = {(name, where) for name, where, _, _ in rows}
    assert len(listed) == len(rows), "docs/claims.md lists a constant twice"
    for module in doc_tables.CONSTANT_MODULES:
        missing = set(doc_tables.numeric_constants(module)) - {n for n, w in listed if w == f"{module}.py"}
        assert not missing, f"docs/claims.md's constants table lacks {sorted(missing)} of lrnbn/{module}.py"


@pytest.mark.parametrize("table", ["bench-step", "bench-layer", "bench-peers"])
def test_benchmark_tables_in_docs_are_the_records(table):
    expected = doc_tables.TABLES[table]()
    assert expected in read("docs/benchmarks.md"), (
        f"docs/benchmarks.md's {table} table is not its record's; paste `python scripts/doc_tables.py {table}`:\n"
        + expected
    )


def test_machine_keys_in_docs_are_the_codes():
    shown = f"only the machine keys of `lrnbn/keys.py` may change ({doc_tables.machine_keys_list()})"
    assert shown in flat(read("docs/rundir.md")), f"docs/rundir.md should say: {shown}"


def test_exit_codes_are_listed_once_and_are_the_codes():
    codes = {value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    header = "| code | meaning |"
    tables = [(page, text) for page in PAGES for text in [page.read_text()] if header in text]
    assert [page_id(p) for p, _ in tables] == ["docs/rundir.md"] and tables[0][1].count(header) == 1
    rows = tables[0][1].split(header, 1)[1].splitlines()[2:]
    listed = [int(row.split("|")[1]) for row in rows[: next((i for i, r in enumerate(rows) if r[:1] != "|"), None)]]
    assert sorted(listed) == sorted(codes), f"exit codes in lrnbn/errors.py: {sorted(codes)}"
    for page in PAGES:  # nowhere else a list of them, which would go stale beside the table
        for paragraph in prose(page.read_text()).split("\n\n"):
            if header not in paragraph:
                assert not (re.search(r"\b74\b", paragraph) and re.search(r"\b130\b", paragraph)), (
                    f"{page_id(page)} lists exit codes outside docs/rundir.md's table:\n{paragraph[:200]}"
                )


def _assigned_strings(source: str, suffixes: tuple[str, ...]) -> dict[str, str]:
    return {
        node.targets[0].id: node.value.value
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id.endswith(suffixes)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


def test_run_files_in_docs_are_the_run_directorys():
    names = set(_assigned_strings(read("lrnbn/rundir.py"), ("_FILE", "_DIR")).values())
    assert names, "lrnbn/rundir.py names no files"
    table = read("docs/rundir.md").split("| file | what it holds |", 1)[1].split("\n\n", 1)[0]
    listed = set(re.findall(r"^\| `([^`]+?)/?` \|", table, re.M))
    assert listed == names, f"docs/rundir.md's files table: {sorted(listed)}; lrnbn/rundir.py: {sorted(names)}"


# --- README ------------------------------------------------------------------------------------------------------


def test_readme_is_short_and_opens_with_the_verdicts():
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES, "README grows: move the detail to docs/"
    assert re.findall(r"^## (.+)$", text, re.M)[0] == "Verdicts"
    assert "| claim | verdict |" in text.split("## Verdicts", 1)[1].split("\n## ", 1)[0]


def test_ci_runs_the_test_command_readme_gives():
    command = next(line for line in read(".ci/run").splitlines() if "pytest" in line)
    shown = [line.strip() for block in code_blocks(README.read_text()) for line in block.splitlines()]
    assert command.strip() in shown, ".ci/run and README's test command differ"


def test_package_map_names_every_module():
    section = README.read_text().split("The package, in the order data flows through it", 1)[1].split("\n\n", 2)[1]
    entries = [re.match(r"^- ((?:`[^`]+`, )*`[^`]+`):", line) for line in section.splitlines()]
    assert all(entries), "every line of README's package map starts with its module names and a colon"
    listed = {name for entry in entries for name in re.findall(r"`([^`]+)`", entry.group(1))}
    modules = {p.name for p in (REPO / "lrnbn").glob("*.py")} - {"__init__.py"}
    assert modules - listed == set(), "README's package map lacks these modules"
    assert listed - modules - {"kernels/"} == set(), "README's package map names modules that do not exist"


def test_no_figure_that_goes_stale_with_each_commit():
    stale = [r"\b\d[\d,]*\s+tests\b", r"\bpytest: \d", r"\bCI\b[^.\n]{0,40}\b\d+ ?(min|minutes|s)\b"]
    for page in PAGES:
        for pattern in stale:
            match = re.search(pattern, page.read_text())
            assert match is None, f"{page_id(page)}: {match.group(0)!r} changes with every commit"


# --- links and paths ---------------------------------------------------------------------------------------------

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#+ (.+)$", prose(page.read_text()), re.M)}


def broken_links(page: Path, text: str) -> list[str]:
    broken = []
    for target in LINK.findall(prose(text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no such heading")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_resolve(page):
    assert broken_links(page, page.read_text()) == []


def test_the_link_check_finds_a_broken_link():
    text = "[a](usage.md) [b](no-such-page.md) [c](usage.md#no-such-heading) [d](https://example.org)\n"
    assert broken_links(REPO / "docs" / "x.md", text) == [
        "no-such-page.md: no such file",
        "usage.md#no-such-heading: no such heading",
    ]


REPO_PATH = re.compile(r"^(?:lrnbn|configs|results|docs|scripts|tests|\.ci)/[\w./=,-]*$")


def repo_paths(text: str) -> list[str]:
    """Paths into the repository named in backticks in the prose, and in documented commands."""
    spans = re.findall(r"`([^`\n]+)`", prose(text))
    spans += [arg for _, args in commands_in(text) for arg in args]
    return [s for s in spans if REPO_PATH.match(s)]


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_repository_paths_exist(page):
    missing = [p for p in repo_paths(page.read_text()) if not (REPO / p.rstrip("/")).exists()]
    assert missing == []


# --- commands ----------------------------------------------------------------------------------------------------

SEPARATORS = {"&&", "||", ";", "|"}


def commands_in(text: str) -> list[tuple[str, list[str]]]:
    """Every `lrnbn ...` invocation in the code blocks (also `.venv/bin/lrnbn` and `-m lrnbn`): (line, arguments)."""
    found = []
    for block in code_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            for start, token in enumerate(tokens):
                first = start == 0 or tokens[start - 1] in SEPARATORS
                if (token == "lrnbn" and (first or tokens[start - 1] == "-m")) or (first and token.endswith("/lrnbn")):
                    args = tokens[start + 1 :]
                    cut = next((i for i, t in enumerate(args) if t in SEPARATORS), len(args))
                    found.append((line.strip(), args[:cut]))
    return found


def resolve(args: list[str]):
    """The command path that `args` names and the click command at its end; ValueError for a command that is not."""
    command, path = get_command(app), []
    while hasattr(command, "commands"):
        if not args or args[0] not in command.commands:
            raise ValueError(f"lrnbn {' '.join(path)}: no command {args[0] if args else ''!r}")
        path.append(args[0])
        command, args = command.commands[args[0]], args[1:]
    return path, command, args


def unknown_options(command, args: list[str]) -> list[str]:
    from lrnbn.config import all_keys

    known = {"--help"} | {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    bad = [a.split("=", 1)[0] for a in args if re.match(r"^--?[A-Za-z]", a) and a.split("=", 1)[0] not in known]
    for option, value in zip(args, args[1:]):
        if option in ("--set", "-s") and value.split("=", 1)[0] not in all_keys():
            bad.append(f"--set {value}")
    return bad


DOCUMENTED = [(page_id(page), line, args) for page in PAGES for line, args in commands_in(page.read_text())]


def test_docs_show_commands():
    assert len({page for page, _, _ in DOCUMENTED}) >= 5, "the command parser found (almost) no commands"


@pytest.mark.parametrize(("page", "line", "args"), DOCUMENTED, ids=[f"{p}: {line[:60]}" for p, line, _ in DOCUMENTED])
def test_documented_command_exists_with_its_options(page, line, args):
    _, command, rest = resolve(args)
    assert unknown_options(command, rest) == [], f"{page}: {line}"


def _command_path(args: list[str]) -> tuple[str, ...] | None:
    try:
        return tuple(resolve(args)[0])
    except ValueError:  # test_documented_command_exists_with_its_options names it
        return None


COMMAND_PATHS = sorted({path for _, _, args in DOCUMENTED if (path := _command_path(args)) is not None})


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=" ".join)
def test_documented_command_has_help(path):
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_the_command_check_finds_a_command_or_option_that_does_not_exist():
    [(_, gone), (_, typo), (_, key)] = commands_in(
        "```\nlrnbn gpu-check\nlrnbn train --epochs 3\nlrnbn train --set train.epoch=3\n```\n"
    )
    with pytest.raises(ValueError, match="gpu-check"):
        resolve(gone)
    assert unknown_options(*resolve(typo)[1:]) == ["--epochs"]
    assert unknown_options(*resolve(key)[1:]) == ["--set train.epoch=3"]
