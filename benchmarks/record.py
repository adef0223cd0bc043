"""Where benchmarks keep their figures: ``benchmarks/results/NAME.json``, always with the machine that measured them.

Every benchmark writes through ``write_results`` (so every file says which
machine, which library versions and when) and ``run_all`` reads them back with
``load_results``.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .machine import machine_info

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def results_path(name: str, directory: Path | None = None) -> Path:
    return (directory or RESULTS_DIR) / f"{name}.json"


def write_results(name: str, results: dict[str, Any], directory: Path | None = None) -> Path:
    """Write ``results`` to ``results/NAME.json`` (atomically), led by its name, time and ``machine_info()``."""
    record = {
        "benchmark": name,
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        **{k: v for k, v in results.items() if k not in ("benchmark", "written_at", "machine")},
    }
    path = results_path(name, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_results(path: Path) -> dict[str, Any] | None:
    """A results file as a dict; None when it is missing or not JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else {"value": data}
