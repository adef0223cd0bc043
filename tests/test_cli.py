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


def test_help_does_not_import_datasketch() -> None:
    """The dedup defaults shown in --help live in engine.config, so building the parser never loads datasketch."""
    assert _imported_by_help("datasketch", "scipy", "sklearn", "pyarrow", "aiohttp", "rich") == []


def test_help_imports_are_measured_in_a_fresh_interpreter() -> None:
    """The probe itself can fail: a module the parser does import is reported."""
    assert _imported_by_help("argparse", "engine.config") == ["argparse", "engine.config"]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    assert _exit_code(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"corpusforge {version('corpusforge')}"


def _all_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every parser by its command line (``generate``, ``data export``...), the top level as ``""``."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        found[name] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    walk(child, f"{name} {sub}".strip())

    walk(cli.build_parser(), "")
    return found


def test_every_option_has_help_and_required_ones_say_so() -> None:
    for name, parser in _all_parsers().items():
        text = parser.format_help()
        assert "(default: None)" not in text and "(default: [])" not in text, name
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction):
                continue
            assert action.help, f"corpusforge {name} {action.option_strings or action.dest} has no help"
            if action.required and action.option_strings:
                assert action.help is not None
                assert cli._HelpFormatter("x")._get_help_string(action).endswith("(required)"), (name, action.dest)


def _option_help(command: str, option: str) -> str:
    """The help paragraph of one option as printed (wrapped lines joined)."""
    text = _all_parsers()[command].format_help()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {option} ") or line == f"  {option}")
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if line.strip().startswith("-") or not line.startswith(" " * 10):
            break
        block.append(line)
    return " ".join(" ".join(block).split())


def test_generation_flags_show_their_defaults() -> None:
    from engine.config import DEFAULT_DEDUP_THRESHOLD, DEFAULT_TEMPERATURE
    from engine.dedup import DEFAULT_THRESHOLD

    assert DEFAULT_DEDUP_THRESHOLD == DEFAULT_THRESHOLD  # the filter uses what --help shows
    assert f"(default: {DEFAULT_TEMPERATURE})" in _option_help("generate", "--temperature")
    assert "not sent" in _option_help("generate", "--top-p")
    assert "(default: 0)" in _option_help("generate", "--seed")
    assert f"(default: {DEFAULT_DEDUP_THRESHOLD})" in _option_help("generate", "--dedup-threshold")
    assert "final summary table still prints" in _option_help("generate", "--no-progress")
    assert _option_help("data export", "--out FILE").endswith("(required)")
    assert "(default: 0)" in _option_help("eval", "--seed")
    assert "task YAML" in _option_help("eval", "--test FILE")


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


def test_no_progress_still_prints_the_final_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--no-progress turns the live panel into status lines on stderr; the summary table still goes to stdout."""
    from engine.sim import SimConfig, sim_process

    with sim_process(SimConfig()) as url:
        argv = ["generate", "bbc-news", "--n", "5", "--out", str(tmp_path / "run"), "--base-url", url, "--model", "sim"]
        assert cli.main([*argv, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "run summary" in out and "accepted" in out
