"""The machine a benchmark ran on: CPU model, cores, memory. Parsers are pure."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MachineInfo:
    """What the report states about the machine next to every number."""

    cpu_model: str
    cpus: int
    memory_gib: float
    system: str
    python: str

    def describe(self) -> str:
        """One line for reports, e.g. ``2 CPUs (AMD EPYC), 23.4 GiB RAM, Linux 6.1``."""
        return f"{self.cpus} CPUs ({self.cpu_model}), {self.memory_gib:.1f} GiB RAM, {self.system}"


def cpu_model_from_cpuinfo(text: str) -> str:
    """The first ``model name`` in ``/proc/cpuinfo`` text, or ``unknown``."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return "unknown"


def memory_gib_from_meminfo(text: str) -> float:
    """``MemTotal`` from ``/proc/meminfo`` text, in GiB (0 when absent)."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "MemTotal":
            kib = int(value.split()[0])
            return kib / (1024 * 1024)
    return 0.0


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def read_machine() -> MachineInfo:
    """This machine (Linux /proc files; other systems get what ``platform`` knows)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    model = cpu_model_from_cpuinfo(_read("/proc/cpuinfo"))
    return MachineInfo(
        cpu_model=model if model != "unknown" else (platform.processor() or "unknown"),
        cpus=cpus or 1,
        memory_gib=memory_gib_from_meminfo(_read("/proc/meminfo")),
        system=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
    )
