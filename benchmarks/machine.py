"""Which machine a benchmark measured: CPU, the vector extensions its speed depends on, cores, memory, libraries.

A ratio measured on one CPU need not hold on another: int8 inference in
onnxruntime is as fast as the CPU's integer dot-product instructions (AVX-512
VNNI, AVX-VNNI, AMX) allow, while PyTorch's fp32 path has its own oneDNN kernels.
So every results file records ``machine_info()`` (``benchmarks.record``) and the
summary shows ``describe()``'s one line for it.

Linux is read from ``/proc/cpuinfo``, ``/proc/meminfo`` and the cgroup CPU limit;
elsewhere the fields it cannot know are ``None``. Library versions come from the
installed distributions' metadata (nothing is imported), ``None`` when absent.

    python -m benchmarks.machine        # this machine, as JSON and as one line
"""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

#: Distributions whose versions move the figures (``None`` in the record when not installed).
LIBRARIES = ("numpy", "onnxruntime", "torch", "aiohttp", "datasketch", "ray")
#: ``/proc/cpuinfo`` flags that decide the speed of vectorised and quantised code, with the name shown.
VECTOR_FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512F",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX-512 BF16",
    "amx_tile": "AMX",
    "amx_int8": "AMX-INT8",
    "amx_bf16": "AMX-BF16",
}
#: A 1-minute load average above this many per usable core (the benchmark's own threads count too) marks the
#: record as taken on a busy machine.
BUSY_LOAD_PER_CORE = 1.5
CPUINFO = Path("/proc/cpuinfo")
MEMINFO = Path("/proc/meminfo")
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The first processor's ``key: value`` lines (all processors of a machine are alike for our purpose)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_info(cpuinfo: Path = CPUINFO) -> tuple[dict[str, Any], dict[str, bool] | None]:
    """(the CPU's identity, which of ``VECTOR_FLAGS`` it has or None when its flags cannot be read)."""
    text = _read(cpuinfo)
    fields = parse_cpuinfo(text) if text else {}
    flags = set(fields.get("flags", "").split())
    cpu = {
        "model": fields.get("model name") or platform.processor() or None,
        "vendor": fields.get("vendor_id"),
        "family": _int(fields.get("cpu family")),
        "model_number": _int(fields.get("model")),
        "stepping": _int(fields.get("stepping")),
        "arch": platform.machine() or None,
        "virtual_machine": "hypervisor" in flags if flags else None,
    }
    return cpu, ({flag: flag in flags for flag in VECTOR_FLAGS} if flags else None)


def memory_gb(meminfo: Path = MEMINFO) -> float | None:
    for line in (_read(meminfo) or "").splitlines():
        if line.startswith("MemTotal:"):
            kib = _int(line.split()[1])
            return round(kib / 2**20, 1) if kib else None
    return None


def cgroup_cpu_limit(cpu_max: Path = CGROUP_CPU_MAX) -> float | None:
    """CPUs the cgroup may use (``cpu.max`` quota / period); None when unlimited or unknown."""
    parts = (_read(cpu_max) or "").split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    quota, period = _int(parts[0]), _int(parts[1])
    return round(quota / period, 2) if quota and period else None


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine_info() -> dict[str, Any]:
    """The machine this process runs on, as a JSON-ready dict (a few milliseconds; imports nothing heavy)."""
    cpu, vector = cpu_info()
    affinity = getattr(os, "sched_getaffinity", None)
    return {
        "cpu": cpu,
        "vector_extensions": vector,
        "cores": {
            "logical": os.cpu_count(),
            "usable": len(affinity(0)) if affinity else None,
            "cgroup_limit": cgroup_cpu_limit(),
        },
        "memory_gb": memory_gb(),
        #: 1, 5 and 15-minute load averages when the record was made: other work competing for the cores.
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "os": platform.platform(),
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "libraries": library_versions(),
    }


def describe(info: dict[str, Any] | None) -> str:
    """One line for a ``machine_info()`` record (from this run or read back from a results file)."""
    if not isinstance(info, dict):
        return "not recorded (results written before benchmarks recorded their machine)"
    cpu = info.get("cpu") or {}
    ident = ", ".join(
        part
        for part in (
            str(cpu["vendor"]) if cpu.get("vendor") else "",
            f"family {cpu['family']} model {cpu['model_number']}" if cpu.get("family") is not None else "",
            "virtual machine" if cpu.get("virtual_machine") else "",
        )
        if part
    )
    head = f"{cpu.get('model') or 'unknown CPU'}" + (f" ({ident})" if ident else "")
    vector = info.get("vector_extensions")
    if isinstance(vector, dict):
        have = [VECTOR_FLAGS.get(str(flag), str(flag)) for flag, present in vector.items() if present]
        missing = [
            name for flag, name in (("avx512_vnni", "AVX-512 VNNI"), ("amx_tile", "AMX")) if not vector.get(flag)
        ]
        ext = (", ".join(have) or "none of AVX2/AVX-512/VNNI/AMX") + "".join(f"; no {m}" for m in missing)
    else:
        ext = "vector extensions unknown"
    cores = info.get("cores") or {}
    core_text = f"{cores.get('logical')} logical cores"
    if cores.get("usable") is not None and cores.get("usable") != cores.get("logical"):
        core_text += f" ({cores['usable']} usable)"
    if cores.get("cgroup_limit") is not None:
        core_text += f", cgroup limit {cores['cgroup_limit']:g} CPUs"
    mem = f"{info['memory_gb']:g} GB RAM" if info.get("memory_gb") is not None else "RAM unknown"
    load = info.get("load_average")
    usable = cores.get("usable") or cores.get("logical") or 1
    if isinstance(load, list) and load and load[0] > BUSY_LOAD_PER_CORE * usable:
        mem += f"; busy when measured (load average {load[0]:g} on {usable} cores, the benchmark included: figures are noisy)"
    libs = info.get("libraries") or {}
    lib_text = ", ".join(f"{name} {version}" for name, version in libs.items() if version)
    absent = [name for name, version in libs.items() if not version]
    if absent:
        lib_text += f" (not installed: {', '.join(absent)})"
    return f"{head}; {ext}; {core_text}; {mem}; {info.get('os')}; Python {info.get('python')}; {lib_text}"


def main() -> None:
    info = machine_info()
    print(json.dumps(info, indent=2))
    print(describe(info))


if __name__ == "__main__":
    main()
