"""One roster of tools, and docs/flags.md lists exactly the flags each tool's --help shows.

The roster is the README's table of tools; it must name every command in tuning/
(tests/test_layout.py's COMMANDS, which that test keeps equal to the files), and each must
have a console script in pyproject.toml and a section in docs/flags.md, in the README's order.
"""

from __future__ import annotations

import importlib
import re
import tomllib

import pytest

from tests.conftest import ROOT

FLAGS_MD = ROOT / "docs" / "flags.md"
README = ROOT / "README.md"
HEADING = "## python -m tuning."
TOOLS_HEADING = "## The tools"


def roster() -> list[str]:
    """The tools the README's table names, in its order."""
    section = README.read_text().split(TOOLS_HEADING, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(\w+)` \| `[\w-]+` \|", section, flags=re.MULTILINE)


TOOLS = tuple(roster())
# An option's first line in argparse's help: two spaces, then its option strings.
OPTION_LINE = re.compile(r"^  (?:-\w(?: \S+)?, )?(--[a-z][\w-]*)")
DEFAULT_OPEN = "(default: "


def squash(text: str) -> str:
    """Collapse every run of whitespace to one space."""
    return " ".join(text.split())


def unwrapped(text: str) -> str:
    """``text`` squashed and rejoined where argparse wrapped after a hyphen ("<study-" "name>")."""
    return re.sub(r"(?<=\w-) (?=\w)", "", squash(text))


def says(cell: str, default: str) -> bool:
    """Whether a table cell states ``default`` as a whole (1 is not in 10)."""
    return re.search(rf"(?<!\w){re.escape(unwrapped(default))}(?!\w)", squash(cell)) is not None


def help_text(tool: str, capsys: pytest.CaptureFixture[str],
              monkeypatch: pytest.MonkeyPatch) -> str:
    """The tool's --help, produced in-process."""
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps to the terminal; fix it
    mod = importlib.import_module(f"tuning.{tool}")
    with pytest.raises(SystemExit) as exit_info:
        mod.main(["--help"])
    assert exit_info.value.code in (0, None)
    return capsys.readouterr().out


def defaults_in(entry: str) -> list[str]:
    """Every "(default: X)" of one option's help, X with its own balanced parentheses."""
    found: list[str] = []
    start = entry.find(DEFAULT_OPEN)
    while start != -1:
        depth, i = 1, start + len(DEFAULT_OPEN)
        while i < len(entry) and depth:
            depth += {"(": 1, ")": -1}.get(entry[i], 0)
            i += 1
        found.append(entry[start + len(DEFAULT_OPEN) : i - 1].strip())
        start = entry.find(DEFAULT_OPEN, i)
    return found


def help_options(text: str) -> dict[str, list[str]]:
    """Flag -> the defaults its help shows, for every option except --help."""
    entries: dict[str, list[str]] = {}
    current: str | None = None
    lines: list[str] = []
    for line in [*text.splitlines(), ""]:
        match = OPTION_LINE.match(line)
        if match or not line.startswith("    "):  # a new option, a blank line or a heading
            if current is not None:
                entries[current] = defaults_in(squash(" ".join(lines)))
            current, lines = (match.group(1), [line]) if match else (None, [])
        elif current is not None:
            lines.append(line)
    entries.pop("--help", None)
    return entries


def flags_table(tool: str) -> dict[str, str]:
    """Flag -> default cell of the table in docs/flags.md's section for ``tool``."""
    sections = re.split(r"^(?=## )", FLAGS_MD.read_text(), flags=re.MULTILINE)
    section = [s for s in sections if s.splitlines()[0].strip() == HEADING + tool]
    assert len(section) == 1, f"docs/flags.md needs one heading '{HEADING}{tool}'"
    rows: dict[str, str] = {}
    for line in section[0].splitlines():
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        flag = cells[0].strip("`")
        if not re.fullmatch(r"--[a-z][\w-]*", flag):
            continue  # the header row and the --- row
        assert flag not in rows, f"{flag} is listed twice under {HEADING}{tool}"
        rows[flag] = squash(cells[1].replace("`", ""))
    return rows


def test_the_roster_is_every_command_in_tuning() -> None:
    from tests.test_layout import COMMANDS  # the commands in tuning/ (beside them: api.py)

    commands = set(COMMANDS)
    assert len(TOOLS) == len(set(TOOLS)) and set(TOOLS) == commands, (
        f"README's table of tools lists {TOOLS}; tuning/ holds {sorted(commands)}")


def test_every_tool_has_a_console_script() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    targets = sorted(scripts.values())
    assert targets == sorted(f"tuning.{tool}:main" for tool in TOOLS), targets
    section = README.read_text().split(TOOLS_HEADING, 1)[1].split("\n## ", 1)[0]
    for name, target in scripts.items():  # and the README names each as its tool's
        tool = target.split(":")[0].removeprefix("tuning.")
        assert f"| `{tool}` | `{name}` |" in section, (name, target)


def test_spacetool_commands_are_listed() -> None:
    from tuning.spacetool import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    section = re.split(r"^(?=## )", FLAGS_MD.read_text(), flags=re.MULTILINE)
    text = next(s for s in section if s.startswith(HEADING + "spacetool"))
    listed = re.findall(r"^\| `(\w+)` \|", text, flags=re.MULTILINE)
    assert sorted(listed) == sorted(sub.choices), listed


def test_every_tool_has_one_section() -> None:
    headings = [line.strip() for line in FLAGS_MD.read_text().splitlines()
                if line.startswith(HEADING)]
    assert headings == [HEADING + tool for tool in TOOLS]


@pytest.mark.parametrize("tool", TOOLS)
def test_flags_md_matches_help(tool: str, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    options = help_options(help_text(tool, capsys, monkeypatch))
    assert len(options) >= 1, f"could not read the options of {tool} --help"
    table = flags_table(tool)
    assert sorted(table) == sorted(options), (
        f"docs/flags.md '{HEADING}{tool}' lists {sorted(table)}, "
        f"but --help shows {sorted(options)}"
    )
    for flag, defaults in options.items():
        for default in defaults:
            assert says(table[flag], default), (
                f"docs/flags.md '{HEADING}{tool}': {flag}'s default should say {default!r} "
                f"as --help does, but says {table[flag]!r}"
            )


def test_help_parsing_survives_wrapping() -> None:
    text = (
        "options:\n"
        "  -h, --help  show this help message and exit\n"
        "  --out OUT   folder for the report (default: studies/<study-\n"
        "              name>-report)\n"
        "  --seed SEED seeds the weights (a (nested) note)\n"
        "              (default: the best trial's seed, which replays it with --train-on train)\n"
        "  --verbose   log every request (default: False)\n"
    )
    assert says("`studies/<study-name>-report`", "studies/<study- name>-report")
    assert not says("10", "1")
    assert help_options(text) == {
        "--out": ["studies/<study- name>-report"],
        "--seed": ["the best trial's seed, which replays it with --train-on train"],
        "--verbose": ["False"],
    }
