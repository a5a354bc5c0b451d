"""Helpers for tests that run Snakemake in a subprocess on a config of their own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "config" / "tiny.yaml"


def snakemake(workdir: Path, *args: str, config: Path = TINY, timeout: int = 1200, env: dict | None = None,
              replace: bool = True):
    """Run the workflow in ``workdir`` with ``config`` replacing config/config.yaml (``replace=False``: merged
    over it, as a user's ``--configfile`` is); returns CompletedProcess."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           *(["--replace-workflow-config"] if replace else []), "--configfile", str(config), *args]
    full_env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}", "LMCAL_ROOT": str(workdir),
                "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    full_env.pop("LMCAL_PARENT_RUN_ID", None)
    return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)


def job_counts(dry_run_stdout: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run."""
    counts, in_table = {}, False
    for line in dry_run_stdout.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if not parts or parts[0].startswith("-"):
                continue
            if parts[0] == "total":
                break
            counts[parts[0]] = int(parts[1])
    return counts
