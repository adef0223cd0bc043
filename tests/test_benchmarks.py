"""benchmarks/: run_all finds every benchmark, each renders its own section, and results say which machine measured them."""

from __future__ import annotations

import importlib
import json
import os
import sys
from datetime import datetime
from pathlib import Path

import pytest

from benchmarks import run_all
from benchmarks.machine import LIBRARIES, VECTOR_FLAGS, cpu_info, describe, machine_info, parse_cpuinfo
from benchmarks.record import RESULTS_DIR, load_results, write_results

BENCH_DIR = Path(run_all.__file__).parent
BENCH_FILES = sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))
RESULT_FILES = sorted(RESULTS_DIR.glob("*.json"))


def test_discover_finds_every_bench_module() -> None:
    assert run_all.discover() == [stem.removeprefix("bench_") for stem in BENCH_FILES]
    assert {"client", "dedup", "encoder", "e2e", "endpoint"} <= set(run_all.discover())


@pytest.mark.parametrize("stem", BENCH_FILES)
def test_every_bench_module_renders_its_own_section(stem: str) -> None:
    module = importlib.import_module(f"benchmarks.{stem}")
    assert callable(getattr(module, "main", None)), f"benchmarks/{stem}.py needs a main()"
    assert callable(getattr(module, "render", None)), (
        f"benchmarks/{stem}.py needs render(result) -> str (its section of SUMMARY.md; "
        "benchmarks.markdown.render_generic will do for a start)"
    )
    assert (module.__doc__ or "").strip(), f"benchmarks/{stem}.py needs a docstring: its first line is its title"


@pytest.mark.parametrize("path", RESULT_FILES, ids=[p.name for p in RESULT_FILES])
def test_every_results_file_renders(path: Path) -> None:
    data = load_results(path)
    assert data is not None
    bench = run_all.load(path.stem)
    assert bench.module is not None, bench.import_error
    text = bench.module.render(data)  # the module's own renderer, not run_all's fallback
    assert isinstance(text, str) and "|" in text and "could not render" not in text
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in bench.headline(data))


def test_machine_info_on_this_machine() -> None:
    info = machine_info()
    json.dumps(info)
    assert info["cpu"]["model"]
    assert info["cores"]["logical"] == os.cpu_count()
    if hasattr(os, "sched_getaffinity"):
        assert info["cores"]["usable"] == len(os.sched_getaffinity(0))
    assert info["python"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}.")
    assert set(info["libraries"]) == set(LIBRARIES)
    assert info["libraries"]["numpy"] == importlib.import_module("numpy").__version__
    if Path("/proc/cpuinfo").exists():
        assert set(info["vector_extensions"]) == set(VECTOR_FLAGS)
        flags = set(parse_cpuinfo(Path("/proc/cpuinfo").read_text())["flags"].split())
        assert info["vector_extensions"]["avx2"] == ("avx2" in flags)
        assert info["memory_gb"] > 0
    line = describe(info)
    assert info["cpu"]["model"] in line and f"numpy {info['libraries']['numpy']}" in line
    busy = dict(info, cores={"logical": 2, "usable": 2}, load_average=[6.5, 5.0, 3.0])
    assert "busy when measured (load average 6.5 on 2 cores" in describe(busy)
    assert "busy" not in describe(dict(busy, load_average=[2.5, 1.0, 1.0]))


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    block = (
        "processor\t: {n}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
        "model name\t: Intel(R) Xeon(R) Platinum 8480+\nstepping\t: 8\nflags\t\t: {flags}\n\n"
    )
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        block.format(n=0, flags="fpu avx2 avx512f avx512_vnni amx_tile amx_int8") + block.format(n=1, flags="fpu")
    )
    cpu, vector = cpu_info(cpuinfo)
    assert cpu["model"] == "Intel(R) Xeon(R) Platinum 8480+" and (cpu["family"], cpu["model_number"]) == (6, 143)
    assert cpu["virtual_machine"] is False
    assert vector is not None and vector["amx_int8"] and vector["avx512_vnni"] and not vector["avx512_bf16"]
    text = describe({"cpu": cpu, "vector_extensions": vector, "cores": {"logical": 2}, "libraries": {}})
    assert "AMX-INT8" in text and "no AMX" not in text
    cpuinfo.write_text(block.format(n=0, flags="fpu avx2 hypervisor"))
    cpu, vector = cpu_info(cpuinfo)
    text = describe({"cpu": cpu, "vector_extensions": vector, "cores": {"logical": 2}, "libraries": {}})
    assert cpu["virtual_machine"] is True and "no AVX-512 VNNI" in text and "no AMX" in text
    assert cpu_info(tmp_path / "absent")[1] is None


def test_written_results_carry_the_machine_and_render_with_it(tmp_path: Path) -> None:
    path = write_results("dedup", {"corpora": {"short": {"docs": 10, "speedup_vs_update": 2.5}}}, directory=tmp_path)
    data = load_results(path)
    assert data is not None
    assert data["benchmark"] == "dedup" and data["machine"]["cpu"] == machine_info()["cpu"]
    assert datetime.fromisoformat(data["written_at"]).tzinfo is not None
    outcome = run_all.Outcome("dedup", "ok", 1.0, results=data)
    summary = run_all.render_summary([outcome], datetime.now(), data["machine"])
    assert f"This run's machine: {describe(data['machine'])}." in summary
    assert f"Measured on: {describe(data['machine'])}." in summary
    assert "short texts, vectorised / datasketch update: 2.5x" in summary


def test_summary_reports_a_failure_and_results_without_a_machine() -> None:
    failed = run_all.Outcome("client", "failed", 2.0, "exit code 1", "Traceback ...\nValueError: boom")
    old = run_all.Outcome("dedup", "not run", results={"corpora": {}}, results_time=0.0)
    summary = run_all.render_summary([failed, old], datetime.now(), machine_info())
    assert "**failed**: exit code 1." in summary and "ValueError: boom" in summary
    assert "Measured on: not recorded" in summary


def test_unknown_benchmark_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_all.main(["--only", "dedup,no_such_bench"]) == 2
    assert "no_such_bench" in capsys.readouterr().err


def test_pick_variant_names_the_fastest_and_how_to_choose_it(tmp_path: Path) -> None:
    from benchmarks import pick_variant

    rates = {"fp32": {"short": 100.0, "long": 10.0}, "opt": {"short": 120.0, "long": 14.0}}
    rates["int8"] = {"short": 130.0, "long": 9.0}  # faster on short texts, slower on long: opt wins overall
    assert pick_variant.fastest(rates) == "opt"
    assert "`--variant opt`" in pick_variant.report(rates, "some CPU", 2)
    rates["int8"]["long"] = 20.0
    assert pick_variant.fastest(rates) == "int8"
    assert "the default; nothing to choose" in pick_variant.report(rates, "some CPU", 2)
    with pytest.raises(SystemExit, match="no exported encoder"):
        pick_variant.find_models(tmp_path)
