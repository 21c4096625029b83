"""python -m tuning.spacetool: check a search-space file, or show a space, as a table.

    python -m tuning.spacetool check my-space.toml    # every problem, one line each; or the table
    python -m tuning.spacetool show extended          # a built-in space (or a file), as a table
    python -m tuning.spacetool list                   # the built-in spaces and their files
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tuning.cli.common import EXIT_OK, EXIT_USAGE, HelpFormatter, Parser
from tuning.space.file import BUILTIN, Space, SpaceError, builtin_path, load_space

PROG = "python -m tuning.spacetool"


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="Check a search-space file (TOML, one table per parameter; docs/spaces.md) "
        "before a search uses it, or show a space as a table. A search takes the same file "
        "with --space PATH.",
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser("check", help="check a space file; print its table or every "
                                "problem, one line each, on stderr (exit status 2)")
    check.add_argument("space", metavar="FILE|NAME", help="a space file's path or a built-in "
                       f"space ({', '.join(BUILTIN)})")
    show = commands.add_parser("show", help="print a space as a table")
    show.add_argument("space", metavar="NAME|FILE", help="a built-in space or a file")
    commands.add_parser("list", help="the built-in spaces and where their files are")
    return parser


def table(space: Space) -> str:
    """The space as an aligned text table: parameter, type, range or choices, condition."""
    rows = [("parameter", "type", "range / choices / value", "only when"), *space.table()]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             .rstrip() for row in rows]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return the process exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "list":
        for name in BUILTIN:
            print(f"{name:<10} {builtin_path(name)}")
        return EXIT_OK
    try:
        space = load_space(args.space)
    except SpaceError as exc:  # on stderr with status 2, as search reports the same file
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    if args.command == "check":
        print(f"{args.space}: a valid space of {len(space.params)} parameters.")
    print(table(space))
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
