"""A slice of the tiny DAG through a real one-node SLURM cluster (``profiles/slurm``, jobs through sbatch),
with MLflow on a tracking server, compared with the local run of the whole tiny DAG (the e2e test's).

The slice (SLURM_TARGETS) covers data, tokenizer, the ladder, calibration scoring and one SFT job (a GPU rule,
with checkpoints): every kind of job the executor treats differently, at a third of the whole DAG's cost. The
whole DAG through SLURM doubled the suite's longest test (11 min of 19 on 2 cores) and checked nothing more
about the executor.

The cluster comes from Debian's packages (.ci/slurm-up.sh installs them when missing; it needs root) and is
stopped at the end (.ci/slurm-down.sh). Skipped, with the reason, when it cannot be brought up.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from lmcal.core import tracking
from mlflow.tracking import MlflowClient
from mlflow_server_utils import mlflow_server, server_errors
from workflow_utils import REPO, snakemake

pytestmark = pytest.mark.slow

# The profile sizes jobs for a GPU cluster; this node has 2 CPUs, ~24 GB and no GPU. A CPU-only cluster runs
# the GPU rules with gpu=0 (README, Clusters); a command-line --set-resources replaces the profile's whole
# map. The tiny config has entropy.granularity: model, so the shard part rules are not in its DAG.
GPU_RULES = ("entropy_sample", "sft_train")
SLURM_TARGETS = (
    "results/ladder/summary.json",
    "results/calibration/summary.json",
    "results/models/ladder-h16--sft-b0.1-lr0.003-s0/model_info.json",
)
SLURM_ARGS = (
    "--workflow-profile",
    str(REPO / "profiles" / "slurm"),
    "--jobs",
    "4",
    "--retries",
    "0",
    "--latency-wait",
    "5",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--default-resources",
    "mem_mb=1000",
    "runtime=60",
    "--set-resources",
    *(f"{r}:{k}={v}" for r in GPU_RULES for k, v in (("gpu", 0), ("mem_mb", 2000))),
)
# fields that measure the run, not its results ("cost": the seconds each calibrated sampler spent)
TIMING = re.compile(
    r"time|second|elapsed|wall|duration|per_s|throughput|timestamp|date|host|pid|^cost$", re.IGNORECASE
)


@pytest.fixture(scope="module")
def slurm_cluster():
    if os.geteuid() != 0:
        pytest.skip("a SLURM cluster needs root to install and start its daemons")
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        pytest.skip("snakemake-executor-plugin-slurm is not installed (pip install -e '.[dev]')")
    up = subprocess.run(
        ["bash", str(REPO / ".ci" / "slurm-up.sh")], check=False, capture_output=True, text=True, timeout=900
    )
    if up.returncode != 0:
        subprocess.run(
            ["bash", str(REPO / ".ci" / "slurm-down.sh")], check=False, capture_output=True, timeout=300
        )
        pytest.skip(
            f"could not bring up a SLURM cluster (slurm-up.sh exit {up.returncode}): {up.stderr[-1500:]}"
        )
    try:
        yield
    finally:
        subprocess.run(
            ["bash", str(REPO / ".ci" / "slurm-down.sh")], check=False, capture_output=True, timeout=300
        )


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return dict(line.split("|", 1) for line in out.split())


def results_differences(a, b, where: str = "") -> list[str]:
    """Where two parsed JSON values differ, ignoring timing fields (floats to 1e-9 relative)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}: keys {sorted(set(a) ^ set(b))}"] if set(a) != set(b) else []
        for k in sorted(set(a) & set(b)):
            if not TIMING.search(str(k)):
                out += results_differences(a[k], b[k], f"{where}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: lengths {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in results_differences(x, y, f"{where}[{i}]")]
    if isinstance(a, float) and isinstance(b, (int, float)):
        same = (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
        return [] if same else [f"{where}: {a} != {b}"]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def relative_paths(df: pd.DataFrame, root: Path) -> pd.DataFrame:
    """The frame with ``root`` replaced by ``<root>`` in its text columns (two runs live in two directories)."""
    for col in df.select_dtypes(include=["object", "string"]).columns:
        if df[col].map(lambda v: isinstance(v, str)).all():
            df[col] = df[col].str.replace(str(root), "<root>", regex=False)
    return df


def output_differences(slurm_dir: Path, local_dir: Path) -> list[str]:
    """Compare every summary.json and parquet file under results/ of the SLURM run with the local run's (paths
    made relative): the SLURM run is a slice of the local one, so each of its files has a local twin."""
    diffs = []
    files = sorted(
        p.relative_to(slurm_dir)
        for p in (slurm_dir / "results").rglob("*")
        if p.name == "summary.json" or p.suffix == ".parquet"
    )
    assert files, "the SLURM run wrote no summaries"
    for rel in files:
        if not (local_dir / rel).exists():
            diffs.append(f"{rel}: missing from the local run")
        elif rel.suffix == ".json":
            a, b = (
                json.loads((d / rel).read_text().replace(str(d), "<root>")) for d in (slurm_dir, local_dir)
            )
            diffs += results_differences(a, b, str(rel))
        else:
            a, b = (relative_paths(pd.read_parquet(d / rel), d) for d in (slurm_dir, local_dir))
            keep = [c for c in a.columns if not TIMING.search(str(c))]
            try:
                pd.testing.assert_frame_equal(a[keep], b.reindex(columns=keep), check_exact=False, rtol=1e-9)
            except AssertionError as exc:
                diffs.append(f"{rel}: {str(exc)[:300]}")
    return diffs


def test_tiny_dag_slice_runs_through_slurm_like_a_local_run(slurm_cluster, tmp_path, request):
    slurm_dir = tmp_path / "slurm"
    slurm_dir.mkdir()
    with mlflow_server(tmp_path / "server") as uri, ThreadPoolExecutor(1) as pool:
        t0 = time.time()
        on_slurm = pool.submit(
            # "--": --set-resources takes any number of values, so the targets come after an explicit end
            snakemake, slurm_dir, *SLURM_ARGS, "--", *SLURM_TARGETS, timeout=3000,
            env={"MLFLOW_TRACKING_URI": uri},
        )
        # the local reference is the session's tiny run (the e2e test checks it too), built while SLURM works
        local_dir, loc = request.getfixturevalue("tiny_local_run")
        res = on_slurm.result()
        wall = time.time() - t0
        assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
        assert loc.returncode == 0, (loc.stdout + loc.stderr)[-4000:]

        job_ids = re.findall(r"submitted with SLURM jobid (\d+)", res.stderr)
        n_jobs = res.stderr.count("Finished jobid")  # explicit targets: no rule all
        assert len(job_ids) == n_jobs > 0, f"{len(job_ids)} sbatch submissions for {n_jobs} jobs"
        states = sacct_states(job_ids)
        assert states == {j: "COMPLETED" for j in job_ids}

        c = MlflowClient(uri)
        runs = c.search_runs([c.get_experiment_by_name(tracking.EXPERIMENT).experiment_id], max_results=5000)
        parents = [r for r in runs if r.data.tags.get("lmcal.kind") == "invocation"]
        children = [r for r in runs if "snakemake.rule" in r.data.tags]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert len(children) == len(runs) - 1 == n_jobs
        assert all(r.info.status == "FINISHED" for r in children)
        assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
        assert sorted(r.data.tags.get("slurm_job_id", "") for r in children) == sorted(job_ids)
        assert "could not log" not in res.stderr and server_errors(tmp_path / "server") == []
    assert not list((slurm_dir / ".snakemake" / "lmcal-spool").glob("*/*")), "records left in the spool"
    assert all((slurm_dir / t).exists() for t in SLURM_TARGETS)
    rules = {r.data.tags["snakemake.rule"] for r in children}
    assert rules >= {"train_ladder_model", "evaluate_calibration", "sft_train"}, rules

    assert output_differences(slurm_dir, local_dir) == []
    print(
        f"\nSLURM: {len(job_ids)} jobs through sbatch, all COMPLETED in sacct, wall {wall:.0f} s; "
        f"MLflow: {len(parents)} parent, {len(children)} FINISHED children"
    )
    (tmp_path / "slurm-summary.json").write_text(
        json.dumps({"sbatch_jobs": len(job_ids), "wall_s": wall, "children": len(children)})
    )
