"""Every package under engine/ and evaluators/ re-exports its public names through ``__all__``, and each one imports;
every module's ``__all__`` names only what the module defines.

This is the one export test; per-package copies of it were removed.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import pkgutil
import sys
import textwrap
from pathlib import Path

import pytest

ROOTS = ("engine", "evaluators")


def _packages(roots: tuple[str, ...] = ROOTS) -> list[str]:
    names: list[str] = []
    for root in roots:
        package = importlib.import_module(root)
        names.append(root)
        # A subpackage that fails to import is kept (not skipped, walk_packages' default): its check shows the error.
        found = pkgutil.walk_packages(package.__path__, prefix=f"{root}.", onerror=names.append)
        names += [info.name for info in found if info.ispkg]
    return sorted(set(names))


def export_problems(package: str) -> list[str]:
    """What is wrong with ``package``'s exports: no ``__all__``, a bad entry, a name that does not import."""
    module = importlib.import_module(package)
    exported = module.__dict__.get("__all__")
    if exported is None:
        return [f"{package} does not define __all__"]
    if not isinstance(exported, list | tuple) or not all(isinstance(n, str) for n in exported):
        return [f"{package}.__all__ must be a list of strings"]
    problems = []
    if len(set(exported)) != len(exported):
        problems.append(f"{package}.__all__ lists a name twice")
    namespace: dict[str, object] = {}
    try:
        exec(f"from {package} import *", namespace)  # what a user's star import gets
    except (ImportError, AttributeError) as exc:
        problems.append(f"`from {package} import *` fails: {exc}")
    missing = [n for n in exported if n not in namespace]
    if missing and not problems:
        problems.append(f"{package}.__all__ lists names it does not define: {missing}")
    return problems


def module_export_problems(source: str, name: str) -> list[str]:
    """Names in a module's literal ``__all__`` that its top level never binds (checked without importing it)."""
    tree = ast.parse(source)
    bound: set[str] = set()
    exported: list[str] | None = None

    def visit(stmts: list[ast.stmt]) -> None:
        nonlocal exported
        for node in stmts:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                bound.add(node.name)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                bound.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    bound.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
                    if isinstance(target, ast.Name) and target.id == "__all__" and node.value is not None:
                        with contextlib.suppress(ValueError):  # a computed __all__: the import check covers it
                            exported = list(ast.literal_eval(node.value))
            elif isinstance(node, ast.If | ast.Try | ast.With):
                visit(node.body)
                for extra in ("orelse", "finalbody"):
                    visit(getattr(node, extra, []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    if exported is None:
        return []
    missing = [n for n in exported if n not in bound]
    return [f"{name}.__all__ lists names it does not define: {missing}"] if missing else []


def _modules() -> list[Path]:
    root = Path(__file__).resolve().parent.parent
    return sorted(p for r in ROOTS for p in (root / r).rglob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", _modules(), ids=lambda p: ".".join(p.with_suffix("").parts[-2:]))
def test_module_all_names_are_defined(path: Path) -> None:
    assert module_export_problems(path.read_text(encoding="utf-8"), path.stem) == []


def test_the_module_check_catches_an_undefined_name() -> None:
    source = "from x import a\nimport b.c\nd: int = 1\ntry:\n    e = 1\nexcept ImportError:\n    pass\n"
    assert module_export_problems(source + "__all__ = ['a', 'b', 'd', 'e']\n", "m") == []
    assert module_export_problems(source + "__all__ = ['a', 'typo']\n", "m") == [
        "m.__all__ lists names it does not define: ['typo']"
    ]


def test_the_package_walk_finds_every_package_directory() -> None:
    """A package the walk missed would be checked by nothing."""
    root = Path(__file__).resolve().parent.parent
    on_disk = {".".join(p.parent.relative_to(root).parts) for r in ROOTS for p in (root / r).rglob("__init__.py")} - {
        ""
    }
    assert on_disk == set(_packages())


@pytest.mark.parametrize("package", _packages())
def test_package_exports_import(package: str) -> None:
    assert export_problems(package) == []


def test_the_check_catches_a_package_without_all_and_a_name_that_does_not_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, body in {
        "no_all": "x = 1\n",
        "bad_name": "__all__ = ['x', 'y']\nx = 1\n",
        "twice": "__all__ = ['x', 'x']\nx = 1\n",
        "good": "from .mod import x\n__all__ = ['x']\n",
    }.items():
        (tmp_path / "fakepkg" / name).mkdir(parents=True)
        (tmp_path / "fakepkg" / name / "__init__.py").write_text(textwrap.dedent(body))
    (tmp_path / "fakepkg" / "__init__.py").write_text("__all__: list[str] = ['good']\nfrom . import good\n")
    (tmp_path / "fakepkg" / "good" / "mod.py").write_text("x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert _packages(("fakepkg",)) == [
            "fakepkg",
            "fakepkg.bad_name",
            "fakepkg.good",
            "fakepkg.no_all",
            "fakepkg.twice",
        ]
        assert export_problems("fakepkg.no_all") == ["fakepkg.no_all does not define __all__"]
        assert "fakepkg.bad_name" in export_problems("fakepkg.bad_name")[0]
        assert "'y'" in export_problems("fakepkg.bad_name")[0]
        assert export_problems("fakepkg.twice") == ["fakepkg.twice.__all__ lists a name twice"]
        assert export_problems("fakepkg.good") == []
    finally:
        for mod in [m for m in sys.modules if m == "fakepkg" or m.startswith("fakepkg.")]:
            del sys.modules[mod]
