"""The documented cluster setup: parallel Snakemake jobs logging through the spool to one ``mlflow server``.

A throwaway workflow with six jobs at ``--cores 4`` uses the same hooks as the real Snakefile
(``start_parent`` in onstart, ``finish_parent`` in onsuccess/onerror) and ``job_run`` in its script, with
MLFLOW_TRACKING_URI set to ``http://127.0.0.1:PORT``. Every job must be logged, at least four must have run at
once, and neither Snakemake's log nor the server's may show an error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lmcal.core import tracking
from mlflow.tracking import MlflowClient
from mlflow_server_utils import mlflow_server, server_errors

N_JOBS, CORES = 6, 4

SNAKEFILE = f"""
import lmcal.core.tracking

onstart:
    lmcal.core.tracking.start_parent(config)

onsuccess:
    lmcal.core.tracking.finish_parent("FINISHED")

onerror:
    lmcal.core.tracking.finish_parent("FAILED")

rule all:
    input: expand("out/{{i}}.json", i=range({N_JOBS}))

rule work:
    output: "out/{{i}}.json"
    log: "logs/{{i}}.log"
    params: scale=3
    threads: 1
    script: "job.py"
"""

# Each job waits until CORES jobs have started (up to 60 s): the test knows jobs overlapped, not hoping.
JOB = f"""
import json, time
from pathlib import Path
from lmcal.core import tracking

i = int(snakemake.wildcards.i)
with tracking.job_run(snakemake) as run:
    Path("started").mkdir(exist_ok=True)
    Path(f"started/{{i}}").touch()
    deadline = time.time() + 60
    while len(list(Path("started").iterdir())) < {CORES} and time.time() < deadline:
        time.sleep(0.1)
    n_started = len(list(Path("started").iterdir()))
    run.log_metrics({{"value": i * snakemake.params.scale, "peers_started": n_started}})
    run.log_metric_series("curve", [float(i + k) for k in range(5)])
    run.set_tags({{"job_index": str(i)}})
    json.dump({{"i": i}}, open(snakemake.output[0], "w"))
"""


def max_overlap(intervals: list[tuple[int, int]]) -> int:
    """The largest number of [start, end] intervals that contain one instant."""
    events = sorted(
        [(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1])
    )
    best = cur = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def test_max_overlap():
    assert max_overlap([(0, 10), (1, 2), (3, 4)]) == 2
    assert max_overlap([(0, 5), (1, 6), (2, 7), (3, 8)]) == 4
    assert max_overlap([(0, 1), (1, 2)]) == 1  # an end and a start at the same instant do not overlap


def test_parallel_jobs_log_to_one_tracking_server(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "Snakefile").write_text(SNAKEFILE)
    (work / "job.py").write_text(JOB)
    with mlflow_server(tmp_path / "server") as uri:
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "LMCAL_ROOT": str(work)}
        env.pop(tracking.ENV_PARENT, None), env.pop(tracking.ENV_SPOOL, None)
        res = subprocess.run(
            [sys.executable, "-m", "snakemake", "--cores", str(CORES), "--workflow-profile", "none"],
            check=False,
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
        c = MlflowClient(uri)
        exp = c.get_experiment_by_name(tracking.EXPERIMENT)
        runs = c.search_runs([exp.experiment_id], max_results=100)
        (parent,) = [r for r in runs if r.data.tags.get("lmcal.kind") == "invocation"]
        children = [r for r in runs if r.data.tags.get("snakemake.rule") == "work"]
        assert parent.info.status == "FINISHED" and len(runs) == N_JOBS + 1
        assert sorted(int(r.data.tags["wc.i"]) for r in children) == list(range(N_JOBS))
        for r in children:
            i = int(r.data.tags["wc.i"])
            assert r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parent.info.run_id
            assert r.data.params == {"scale": "3"} and r.data.tags["job_index"] == str(i)
            assert r.data.metrics["value"] == 3 * i and r.data.metrics["curve"] == i + 4.0
            assert [m.value for m in c.get_metric_history(r.info.run_id, "curve")] == [
                i + k for k in range(5)
            ]
            arts = {a.path for d in ("outputs", "logs") for a in c.list_artifacts(r.info.run_id, d)}
            assert arts == {f"outputs/{i}.json", f"logs/{i}.log"}
        assert max_overlap([(r.info.start_time, r.info.end_time) for r in children]) >= CORES
        assert "lmcal tracking" not in res.stderr, res.stderr[-3000:]  # no record failed to log, even once
    assert server_errors(tmp_path / "server") == []
    # artifacts went through the server (proxied), not to a path the jobs see
    stored = {p.name for p in Path(tmp_path / "server" / "mlartifacts").rglob("*.json")}
    assert {f"{i}.json" for i in range(N_JOBS)} <= stored
    assert not (work / "mlartifacts").exists() and not (work / "mlruns").exists()
