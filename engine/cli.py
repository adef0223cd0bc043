"""The command line: the only place that reads flags, environment variables and files.

Each subcommand lives in ``engine/commands/<name>.py`` and exposes ``NAME``,
``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``. Command modules
import their heavy dependencies inside ``run`` so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from .errors import EngineError, FatalError

__all__ = ["COMMANDS", "build_parser", "main"]

#: Subcommand modules under ``engine.commands``, in the order ``--help`` lists them.
COMMANDS = (
    "run",
    "generate",
    "batches",
    "batch",
    "serve_sim",
    "dedup",
    "data",
    "eval",
    "clean",
    "score",
    "inspect",
    "experiment",
    "bench_endpoint",
)

EXIT_FATAL = 2
EXIT_INTERRUPTED = 130


class _HelpFormatter(argparse.HelpFormatter):
    """Shows defaults (not the uninformative ``None``, ``False`` or ``[]``) and marks required options."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.required and action.option_strings:
            text += " (required)"
        default = action.default
        if default is None or default is False or default == [] or default is argparse.SUPPRESS:
            return text
        if "%(default)" not in text and (action.option_strings or action.nargs in (argparse.OPTIONAL, "*")):
            text += " (default: %(default)s)"
        return text


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("corpusforge")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _load(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"engine.commands.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"engine.commands.{name}":
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corpusforge",
        description=(
            "Generate large synthetic text-classification corpora with LLM APIs, "
            "filter them, and measure whether they are any good."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = _load(name)
        if module is None:
            continue
        p = sub.add_parser(
            module.NAME,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=_HelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _fail(message: str) -> None:
    print(f"corpusforge: error: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_FATAL
    try:
        code: int = args._run(args)
        return code
    except KeyboardInterrupt:
        _fail("interrupted; what was written is on disk (rerun with --resume to continue)")
        return EXIT_INTERRUPTED
    except EngineError as exc:
        _fail(str(exc))
        return EXIT_FATAL if isinstance(exc, FatalError) else 1
    except BrokenPipeError:
        # stdout closed early (| head): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
