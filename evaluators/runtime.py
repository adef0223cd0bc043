"""onnxruntime CPU sessions (``ort_session``): every graph optimisation, one intra-op thread per core."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["make_session", "ort_session", "run_session"]


def ort_session(path_or_bytes: Path | bytes, threads: int | None = None) -> Any:
    """An onnxruntime CPU session: all graph optimisations, one intra-op thread per core."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or _cores()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    model = path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def run_session(session: Any, feeds: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
    wanted = {i.name for i in session.get_inputs()}
    result: list[np.ndarray] = session.run(outputs, {k: v for k, v in feeds.items() if k in wanted})
    return result


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


#: The older name of :func:`ort_session` (an onnxruntime session, not an HTTP one).
make_session = ort_session
