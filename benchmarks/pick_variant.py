"""Which encoder variant is fastest on this machine: fp32, opt and int8 timed with onnxruntime in about ten seconds.

The int8 speed-up is the CPU's more than ours: dynamic int8 matrix products run
on onnxruntime's integer kernels, fast with AVX-512 VNNI / AVX-VNNI / AMX and
slower without, while the fp32 variants ride on its (and PyTorch's oneDNN) float
kernels. ``benchmarks.bench_encoder`` measures every variant against PyTorch with
real texts and accuracy in some minutes; this is the quick check before choosing
``--variant`` for ``eval``, ``experiment`` and ``inspect``.

It needs nothing of corpusforge but the ONNX files it exported (under its cache:
``$CORPUSFORGE_CACHE``, ``$XDG_CACHE_HOME/corpusforge`` or ``~/.cache/corpusforge``;
``--dir`` for another place) and onnxruntime. The inputs are synthetic token ids
in the shapes the encoder runs: a batch of 64 short texts (16 tokens, a title)
and a batch of 16 long ones (256 tokens, an article cut at the model's limit);
speed depends on the shapes, not on the words.

    python -m benchmarks.pick_variant              # prints a table and the fastest variant
    python -m benchmarks.pick_variant --seconds 1  # quicker, noisier
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

#: Variant -> file name, as corpusforge's encoder writes them.
FILES = {"fp32": "model.onnx", "opt": "model_opt.onnx", "int8": "model_int8.onnx"}
#: corpusforge's default variant.
DEFAULT = "int8"
#: (name, texts per batch, tokens per text).
SHAPES = (("short", 64, 16), ("long", 16, 256))
#: Seconds of timed runs per variant and shape (3 variants x 2 shapes), spread over ``ROUNDS`` rounds.
SECONDS = 1.0
#: The variants take turns, so a burst of load elsewhere does not land on one of them only.
ROUNDS = 3
VOCAB = (1000, 30000)  # ordinary word pieces of the MiniLM vocabulary
CLS, SEP = 101, 102


def cache_root() -> Path:
    if os.environ.get("CORPUSFORGE_CACHE"):
        return Path(os.environ["CORPUSFORGE_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "corpusforge"


def find_models(directory: Path | None = None) -> Path:
    """The newest export holding every variant (or ``directory`` itself when given)."""
    if directory is not None:
        candidates = [directory]
    else:
        candidates = sorted((cache_root() / "onnx").glob("*/"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        if all((path / name).exists() for name in FILES.values()):
            return path
    where = directory or cache_root() / "onnx"
    raise SystemExit(
        f"pick_variant: error: no exported encoder (model.onnx, model_opt.onnx, model_int8.onnx) under {where}; "
        "run `make install` (or `python -m evaluators.encoder`), or pass --dir DIR"
    )


def feeds(session: Any, batch: int, tokens: int, seed: int = 0) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(*VOCAB, size=(batch, tokens), dtype=np.int64)
    ids[:, 0], ids[:, -1] = CLS, SEP
    arrays = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return {i.name: arrays[i.name] for i in session.get_inputs()}


def best_time(session: Any, inputs: dict[str, Any], seconds: float) -> float:
    """The fastest of repeated runs for about ``seconds`` (at least one)."""
    best, spent = float("inf"), 0.0
    while spent < seconds or best == float("inf"):
        t = time.perf_counter()
        session.run(None, inputs)
        took = time.perf_counter() - t
        best, spent = min(best, took), spent + took
    return best


def session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def measure(directory: Path, seconds: float, threads: int) -> dict[str, dict[str, float]]:
    """Texts/s per variant and shape: the best run, the variants taking turns over ``ROUNDS`` rounds."""
    sessions = {variant: session(directory / name, threads) for variant, name in FILES.items()}
    inputs = {shape: feeds(sessions["fp32"], batch, tokens) for shape, batch, tokens in SHAPES}
    for sess in sessions.values():  # warm up
        for shape_inputs in inputs.values():
            sess.run(None, shape_inputs)
    best = {variant: {shape: float("inf") for shape in inputs} for variant in sessions}
    for _ in range(ROUNDS):
        for variant, sess in sessions.items():
            for shape, shape_inputs in inputs.items():
                best[variant][shape] = min(best[variant][shape], best_time(sess, shape_inputs, seconds / ROUNDS))
    batches = {shape: batch for shape, batch, _ in SHAPES}
    return {v: {shape: batches[shape] / t for shape, t in times.items()} for v, times in best.items()}


def fastest(rates: dict[str, dict[str, float]]) -> str:
    """The variant with the best geometric mean of its short and long speeds relative to fp32."""

    def score(variant: str) -> float:
        product = 1.0
        for shape, _, _ in SHAPES:
            product *= rates[variant][shape] / rates["fp32"][shape]
        return float(product ** (1 / len(SHAPES)))

    return max(rates, key=score)


def report(rates: dict[str, dict[str, float]], machine: str, threads: int) -> str:
    lines = [
        f"Encoder variants on {machine}, {threads} onnxruntime threads:",
        "",
        "| variant | short texts/s | long texts/s | × fp32 short | × fp32 long |",
        "|---|---:|---:|---:|---:|",
    ]
    for variant, r in rates.items():
        mark = " (default)" if variant == DEFAULT else ""
        lines.append(
            f"| {variant}{mark} | {r['short']:,.0f} | {r['long']:,.1f} | {r['short'] / rates['fp32']['short']:.2f} "
            f"| {r['long'] / rates['fp32']['long']:.2f} |"
        )
    best = fastest(rates)
    lines.append("")
    if best == DEFAULT:
        lines.append(f"Fastest here: {best}, the default; nothing to choose.")
    else:
        lines.append(
            f"Fastest here: {best}, not the default {DEFAULT}: pass `--variant {best}` to eval, experiment and inspect."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pick_variant", description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, help="directory holding model.onnx, model_opt.onnx and model_int8.onnx")
    p.add_argument("--seconds", type=float, default=SECONDS, help="timed seconds per variant and text length")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0 = every core we may use)")
    args = p.parse_args(argv)
    threads = args.threads or _cores()
    directory = find_models(args.dir)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > 0.5 * _cores():
        print(f"pick_variant: the machine is busy (load {load:.1f} on {_cores()} cores): the figures are noisy")
    rates = measure(directory, args.seconds, threads)
    print(report(rates, _cpu(), threads))
    return 0


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _cpu() -> str:
    """The CPU and whether it has the int8 instructions that matter."""
    from .machine import cpu_info

    cpu, vector = cpu_info()
    name = str(cpu.get("model") or "this CPU")
    if vector is None:
        return name
    have = [
        label
        for flag, label in (("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"), ("amx_int8", "AMX"))
        if vector.get(flag)
    ]
    return f"{name} ({', '.join(have) or 'no VNNI, no AMX'})"


if __name__ == "__main__":
    sys.exit(main())
