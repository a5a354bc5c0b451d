"""Jobs that survive kill -9, and what MLflow shows after a crash.

(a) Each long-running job kind (tests/kill_resume_jobs.py: ladder train_lm, emergence train_rung, train_sft, a V/D
cell, generate_samples, the calibrated sampler) runs in its own process, is SIGKILLed once its N-th checkpoint or
shard is on disk, and is rerun: the rerun must resume from what the killed process left (not start over) and
end bit-identical to an uninterrupted run.

(b) A real ``snakemake`` running a two-job workflow is SIGKILLed mid-job; the next invocation must close the dead
parent and the killed child FAILED, and an identical rerun must replace the previous FINISHED run only once the
new run has finished.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import kill_resume_jobs as jobs
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# kind -> (pause after the N-th checkpoint/shard, what the rerun must resume from, what it must write itself)
CASES = {
    "ladder": (2, ["ckpt@6"], {"checkpoints_written": ["ckpt@9", "ckpt@12"]}),
    "task_ladder": (3, ["work@6"], {"checkpoints_written": ["work@8", "work@10", "work@12"]}),
    "sft": (2, ["ckpt@4"], {"checkpoints_written": ["ckpt@6", "ckpt@8", "ckpt@10"]}),
    # killed during the first β's SFT: pretraining is restored finished, that SFT resumes, the second runs whole
    "vd_cell": (5, ["pretrain@8", "sft-b0@2"], {"checkpoints_written": ["sft-b0@4", "sft-b0.1@2", "sft-b0.1@4"]}),
    "sampling": (2, [], {"shards_written": [f"shard-0000{k}.parquet" for k in (2, 3, 4)]}),
    "calibrated_sampling": (2, [], {"shards_written": [f"shard-0000{k}.parquet" for k in (2, 3, 4)]}),
}


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the job ended (rc {proc.returncode}) before {path.name} appeared: "
                                 f"{proc.stderr.read()[-3000:]}")
        assert time.time() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.1)


def _assert_same_outputs(ref: Path, got: Path) -> None:
    compared = 0
    for f in sorted(ref.iterdir()):
        if f.suffix == ".safetensors":
            a, b = load_file(str(f)), load_file(str(got / f.name))
            assert a.keys() == b.keys()
            for k in a:
                assert torch.equal(a[k], b[k]), f"{f.name}:{k} differs from the uninterrupted run"
        elif f.suffix == ".parquet":
            pd.testing.assert_frame_equal(pd.read_parquet(got / f.name), pd.read_parquet(f), check_exact=True)
        elif f.name == "history.json":
            assert json.loads((got / f.name).read_text()) == json.loads(f.read_text())
        else:
            continue
        compared += 1
    assert compared, f"no outputs to compare in {ref}"


@pytest.mark.parametrize("kind", list(CASES))
def test_killed_job_resumes_and_ends_identical(kind, tmp_path):
    pause_after, resumed_from, rerun_writes = CASES[kind]
    ref = jobs.run_job(kind, tmp_path / "ref-work", tmp_path / "ref")  # uninterrupted, in this process
    assert ref["resumed_from"] == []

    work = tmp_path / "work"
    proc = subprocess.Popen([sys.executable, str(HERE / "kill_resume_jobs.py"), kind, str(work), str(tmp_path / "killed"),
                             "--pause-after", str(pause_after)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        _wait_for(work / "paused", proc)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    killed = json.loads((work / "paused").read_text())
    (work / "paused").unlink()

    rerun = jobs.run_job(kind, work, tmp_path / "rerun")
    assert rerun["resumed_from"] == resumed_from
    for key, expected in rerun_writes.items():
        assert rerun[key] == expected, f"the rerun redid work the killed job had saved: {rerun[key]}"
    _assert_same_outputs(tmp_path / "ref", tmp_path / "rerun")
    last = (killed["checkpoints_written"] or killed["shards_written"])[-1]
    kept = resumed_from or sorted(set(killed["shards_written"]) - set(rerun["shards_written"]))
    print(f"\nKILL9 | {kind} | killed after {last} | resumed from {kept} | identical: yes")


# ---------------------------------------------------------------- (b) snakemake itself killed: MLflow states

SNAKEFILE = """
import lmcal.core.tracking

onstart:
    lmcal.core.tracking.start_parent(config)

onsuccess:
    lmcal.core.tracking.finish_parent("FINISHED")

onerror:
    lmcal.core.tracking.finish_parent("FAILED")

rule all:
    input: "b.txt"

rule a:
    output: "a.txt"
    log: "logs/a.log"
    script: "job.py"

rule b:
    input: "a.txt"
    output: "b.txt"
    log: "logs/b.log"
    script: "job.py"
"""

JOB = """
import time
from pathlib import Path
from lmcal.core import tracking

with tracking.job_run(snakemake) as run:
    run.log_metrics({"value": 1.0})
    if Path(f"hold-{snakemake.rule}").exists():  # the test kills snakemake while this job works
        Path(f"running-{snakemake.rule}").touch()
        time.sleep(600)
    Path(snakemake.output[0]).write_text(snakemake.rule)
"""


def _workflow(tmp_path: Path) -> tuple[Path, dict]:
    wd = tmp_path / "wf"
    wd.mkdir()
    (wd / "Snakefile").write_text(SNAKEFILE)
    (wd / "job.py").write_text(JOB)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{wd / 'mlflow.db'}", "LMCAL_ROOT": str(wd),
           "LMCAL_SPOOL_POLL_S": "0.2"}
    env.pop("LMCAL_PARENT_RUN_ID", None)
    env.pop("LMCAL_SPOOL_DIR", None)
    return wd, env


def _snakemake(wd: Path, env: dict, *args: str, **kw):
    return subprocess.Popen([sys.executable, "-m", "snakemake", "-c1", *args], cwd=wd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    return out


def _runs(wd: Path) -> list:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{wd / 'mlflow.db'}")
    exp = c.get_experiment_by_name("lmcal")
    return c.search_runs([exp.experiment_id], max_results=1000) if exp else []


def _kill_snakemake_mid_job(wd: Path, env: dict, rule: str, *args: str) -> str:
    """Start snakemake, wait until ``rule``'s job works and its RUNNING run is in MLflow, then SIGKILL snakemake
    and its job (the whole process group, as a lost node or an OOM kill of the session would); returns the
    killed invocation's parent run id."""
    (wd / f"hold-{rule}").touch()
    proc = _snakemake(wd, env, *args, start_new_session=True)
    deadline = time.time() + 300
    try:
        while True:
            running = [r for r in _runs(wd) if r.data.tags.get("snakemake.rule") == rule
                       and r.info.status == "RUNNING"] if (wd / f"running-{rule}").exists() else []
            if running:
                break
            assert proc.poll() is None, proc.stdout.read()[-4000:]
            assert time.time() < deadline, "the held job never showed up RUNNING in MLflow"
            time.sleep(0.3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    (wd / f"hold-{rule}").unlink()
    (wd / f"running-{rule}").unlink()
    return running[0].data.tags["mlflow.parentRunId"]


def _by_rule(runs: list, rule: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in runs:
        if r.data.tags.get("snakemake.rule") == rule:
            out.setdefault(r.info.status, []).append(r)
    return out


def test_killed_snakemake_runs_are_failed_next_time_and_a_crashed_rerun_keeps_the_finished_run(tmp_path):
    wd, env = _workflow(tmp_path)
    dead = _kill_snakemake_mid_job(wd, env, "b")
    _finish(_snakemake(wd, env, "--unlock"))  # the killed snakemake left its lock
    second = _finish(_snakemake(wd, env, "--rerun-incomplete"))
    assert "b.txt" in second and (wd / "b.txt").read_text() == "b"
    runs = _runs(wd)
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("lmcal.kind") == "invocation"}
    assert parents[dead].info.status == "FAILED", "the killed invocation's parent must be closed FAILED"
    (new,) = [p for p in parents if p != dead]
    assert parents[new].info.status == "FINISHED" and len(parents) == 2
    b = _by_rule(runs, "b")
    (killed,) = b["FAILED"]
    assert killed.data.tags["mlflow.parentRunId"] == dead and killed.data.tags["lmcal.crashed"] == "true"
    assert killed.data.tags.get("superseded") == "true"  # kept as history, marked as not the current result
    (rerun,) = b["FINISHED"]
    assert rerun.data.tags["mlflow.parentRunId"] == new and rerun.data.tags["job_key"] == killed.data.tags["job_key"]
    assert set(b) == {"FAILED", "FINISHED"}
    (a,) = _by_rule(runs, "a")["FINISHED"]  # a ran once, in the killed invocation: not rerun, not duplicated
    assert a.data.tags["mlflow.parentRunId"] == dead and len([r for r in runs if "snakemake.rule" in r.data.tags]) == 3

    # an identical rerun killed mid-job: the previous FINISHED run must still be there, beside the RUNNING one
    dead2 = _kill_snakemake_mid_job(wd, env, "b", "--forcerun", "b")
    during = _by_rule(_runs(wd), "b")
    assert [r.info.run_id for r in during["FINISHED"]] == [rerun.info.run_id]
    assert [r.data.tags["mlflow.parentRunId"] for r in during["RUNNING"]] == [dead2]
    _finish(_snakemake(wd, env, "--unlock"))
    _finish(_snakemake(wd, env, "--rerun-incomplete"))
    after = _by_rule(_runs(wd), "b")
    (final,) = after["FINISHED"]  # the last rerun replaced the earlier finished run only once it had finished
    assert final.info.run_id != rerun.info.run_id and final.data.tags["job_key"] == rerun.data.tags["job_key"]
    assert len(after["FAILED"]) == 2 and set(after) == {"FAILED", "FINISHED"}
    assert all(r.data.tags.get("superseded") == "true" for r in after["FAILED"])
    assert {r.info.run_id: r.info.status for r in _runs(wd)}[dead2] == "FAILED"
