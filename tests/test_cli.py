"""The CLI's own behaviour: help for every command, and bad input ends in one readable line, not a traceback."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import cli

ROOT = Path(__file__).resolve().parent.parent
COMMANDS_DIR = ROOT / "engine" / "commands"
#: A guard against a hung subprocess, not a timing assertion.
SUBPROCESS_TIMEOUT_S = 120
UNREACHABLE = "http://127.0.0.1:9/v1"


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    for action in cli.build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _exit_code(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def _run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "engine", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    assert lines[0].startswith("corpusforge: error: "), lines[0]
    return lines[0]


def test_every_command_module_is_registered() -> None:
    modules = {p.stem for p in COMMANDS_DIR.glob("*.py") if not p.stem.startswith("_")}
    assert modules <= set(cli.COMMANDS), (
        f"command modules missing from engine.cli.COMMANDS: {modules - set(cli.COMMANDS)}"
    )


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: corpusforge")
    names = list(_subparsers())
    assert names, "no subcommands registered"
    missing = [n for n in names if n not in out]
    assert not missing, f"--help does not list: {missing}"
    for module in cli.COMMANDS:
        if (COMMANDS_DIR / f"{module}.py").exists():
            name = importlib.import_module(f"engine.commands.{module}").NAME
            assert name in names, f"engine/commands/{module}.py (NAME {name!r}) is not a subcommand"


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_subcommand_help_exits_zero(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: corpusforge {command}")


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code([]) != 0
    captured = capsys.readouterr()
    assert "usage: corpusforge" in captured.out + captured.err
    assert "COMMAND" in captured.out + captured.err


def _imported_by_help(*heavy: str) -> list[str]:
    """Modules among ``heavy`` that building the parser (all of --help) imports, in a fresh interpreter."""
    code = (
        "import json, sys\n"
        "from engine.cli import build_parser\n"
        "build_parser()\n"
        f"print(json.dumps(sorted(set({list(heavy)!r}) & set(sys.modules))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S
    )
    assert proc.returncode == 0, proc.stderr
    result: list[str] = json.loads(proc.stdout)
    return result


def test_help_does_not_import_heavy_dependencies() -> None:
    """--help stays fast: command modules import models and runtimes inside run(), not at import."""
    assert _imported_by_help("torch", "onnxruntime", "transformers", "optimum", "matplotlib", "pandas", "openai") == []


@pytest.mark.xfail(
    strict=True,
    reason="engine/commands/dedup.py add_arguments imports engine.dedup.filter, which pulls in datasketch and scipy",
)
def test_help_does_not_import_datasketch() -> None:
    assert _imported_by_help("datasketch", "scipy") == []


def test_generate_unknown_task_is_one_line(tmp_path: Path) -> None:
    proc = _run_cli(
        "generate",
        "no-such-task",
        "--n",
        "1",
        "--out",
        str(tmp_path / "run"),
        "--base-url",
        UNREACHABLE,
        "--model",
        "m",
    )
    line = _assert_one_line_error(proc)
    assert "no-such-task" in line


def test_generate_bad_n_is_one_line(tmp_path: Path) -> None:
    proc = _run_cli(
        "generate", "sst2", "--n", "0", "--out", str(tmp_path / "run"), "--base-url", UNREACHABLE, "--model", "m"
    )
    line = _assert_one_line_error(proc)
    assert "--n" in line
