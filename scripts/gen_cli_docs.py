"""Write ``docs/CLI.md``, the CLI reference, from the ``--help`` of ``corpusforge`` and of every subcommand.

    python scripts/gen_cli_docs.py           # regenerate docs/CLI.md
    python scripts/gen_cli_docs.py --check   # exit 1 if docs/CLI.md is stale

The help is rendered in-process from ``engine.cli.build_parser()`` at a fixed
width (``COLUMNS``), so the output does not depend on the terminal it runs in.
``tests/test_cli_docs.py`` runs the same check, so the reference cannot drift.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "CLI.md"
#: Terminal width the help is rendered at.
COLUMNS = 100
REGENERATE = "python scripts/gen_cli_docs.py"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@contextmanager
def _columns(width: int) -> Iterator[None]:
    """argparse wraps help at ``$COLUMNS``; pin it while rendering."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _anchor(title: str) -> str:
    return title.lower().replace(" ", "-")


def render() -> str:
    """The whole of ``docs/CLI.md``."""
    from engine.cli import build_parser

    with _columns(COLUMNS):
        parser = build_parser()
        top = parser.format_help()
        subs = {name: p.format_help() for name, p in _subcommands(parser).items()}
    lines = [
        "# corpusforge CLI reference",
        "",
        f"Generated from the `--help` of every command; do not edit by hand. Regenerate with `{REGENERATE}`",
        "(`tests/test_cli_docs.py` fails when this file is stale).",
        "",
        f"- [corpusforge](#{_anchor('corpusforge')})",
    ]
    lines += [f"- [corpusforge {name}](#{_anchor('corpusforge ' + name)})" for name in subs]
    sections = [("corpusforge", top)] + [(f"corpusforge {name}", text) for name, text in subs.items()]
    for title, text in sections:
        lines += ["", f"## {title}", "", "```text", text.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write docs/CLI.md from the CLI's --help.")
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/CLI.md is stale; write nothing")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not DOC.exists() or DOC.read_text() != text:
            print(f"docs/CLI.md is stale: run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    from engine.io import atomic_write_text

    atomic_write_text(DOC, text)  # a temp file beside it, then a rename: never half a reference
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
