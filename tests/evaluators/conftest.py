"""Shared fixtures: the ONNX export, made once per session (or reused from the user cache)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.assets import cache_dir
from evaluators.encoder import Encoder, export_dir, export_key

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "eval"


@pytest.fixture(scope="session")
def onnx_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the exported encoder lives: the user cache if `python -m evaluators.encoder` ran, else a temp dir.

    Exporting takes about ten seconds; it happens at most once per test session.
    """
    user = cache_dir("onnx")
    if (user / export_key() / "model.onnx").exists():
        return user
    root = tmp_path_factory.mktemp("onnx")
    export_dir(root)
    return root


@pytest.fixture(scope="session")
def fp32_encoder(onnx_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Encoder]:
    enc = Encoder.load("fp32", cache=True, root=onnx_root, cache_root=tmp_path_factory.mktemp("emb"))
    yield enc
    enc.close()


@pytest.fixture
def cache_env(onnx_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``CORPUSFORGE_CACHE`` pointed at a fresh dir that links to the session's export (for CLI tests)."""
    root = tmp_path / "cache"
    (root / "onnx").mkdir(parents=True)
    (root / "onnx" / export_key()).symlink_to(onnx_root / export_key(), target_is_directory=True)
    monkeypatch.setenv("CORPUSFORGE_CACHE", str(root))
    return root


@pytest.fixture(scope="session")
def tiny() -> dict[str, list[dict[str, str]]]:
    def read(name: str) -> list[dict[str, str]]:
        return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]

    return {"train": read("train.jsonl"), "test": read("test.jsonl")}
