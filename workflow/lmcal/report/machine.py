"""What machine a run was measured on: CPU model, instruction set (AVX-512 or AVX2), cores, torch version, date.

Float results can differ across instruction sets (BLAS kernels per ISA) and thread counts, so every generated
results section names the machine. Reads /proc/cpuinfo; torch's version comes from package metadata (no import).
"""

from __future__ import annotations

import datetime as dt
import os
from importlib import metadata
from pathlib import Path


def cpu_facts(cpuinfo: str) -> dict[str, str | None]:
    """CPU model and the widest vector instruction set named in a /proc/cpuinfo text."""
    model, flags = None, set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "AVX" if "avx" in flags else None
    return {"cpu": model, "isa": isa}


def machine_info(cpuinfo_path: str | Path = "/proc/cpuinfo", wall_minutes: float | None = None,
                 date: str | None = None) -> dict:
    """The machine record written beside every snapshot of claims."""
    path = Path(cpuinfo_path)
    facts = cpu_facts(path.read_text()) if path.exists() else {"cpu": None, "isa": None}
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    return {**facts, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch": torch_version, "date": date or dt.date.today().isoformat(),
            "wall_minutes": None if wall_minutes is None else round(float(wall_minutes), 1)}


def describe(m: dict) -> str:
    """One line for the README: 'Intel Xeon ... (AVX-512), 2 cores, torch 2.5.1, 2026-11-22, 29.7 min wall'."""
    parts = [f"{m.get('cpu') or 'unknown CPU'} ({m.get('isa') or 'ISA unknown'})", f"{m.get('cores')} cores",
             f"torch {m.get('torch') or 'unknown'}", str(m.get("date"))]
    if m.get("wall_minutes") is not None:
        parts.append(f"{m['wall_minutes']} min wall")
    return ", ".join(parts)
