"""docs/CLI.md is generated from the CLI's --help; it must match what the generator writes now."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gen_cli_docs.py"


def _load_generator() -> ModuleType:
    """scripts/ is not a package: load the generator from its file."""
    spec = importlib.util.spec_from_file_location("gen_cli_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_up_to_date() -> None:
    gen = _load_generator()
    assert gen.DOC.exists(), f"docs/CLI.md is missing: run `{gen.REGENERATE}`"
    expected = gen.render()
    assert gen.DOC.read_text() == expected, f"docs/CLI.md is stale: run `{gen.REGENERATE}`"


def test_reference_does_not_depend_on_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = _load_generator()
    monkeypatch.setenv("COLUMNS", "40")
    narrow = gen.render()
    monkeypatch.setenv("COLUMNS", "250")
    assert gen.render() == narrow
    assert "Regenerate with `python scripts/gen_cli_docs.py`" in narrow


def test_check_mode_reports_a_stale_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gen = _load_generator()
    stale = tmp_path / "CLI.md"
    stale.write_text("# old\n")
    monkeypatch.setattr(gen, "DOC", stale)
    assert gen.main(["--check"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "stale" in err
    stale.write_text(gen.render())
    assert gen.main(["--check"]) == 0
