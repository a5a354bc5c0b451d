"""The whole DAG on the tiny config, end to end, with MLflow assertions (CI keeps this test)."""

import json

import yaml
from lmcal.core import tracking
from mlflow.tracking import MlflowClient
from report_checks import report_problems
from workflow_utils import TINY, snakemake


def _runs(workdir):
    c = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = c.get_experiment_by_name(tracking.EXPERIMENT)
    return c.search_runs([exp.experiment_id], max_results=5000)


def test_tiny_workflow_end_to_end(tiny_local_run):
    tmp_path, res = tiny_local_run
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    tiny = yaml.safe_load(TINY.read_text())
    summary = json.loads((tmp_path / "results" / "ladder" / "summary.json").read_text())
    assert summary["n_models"] == len(tiny["ladder"]["sizes"])
    for study in tiny["studies"]:
        assert (tmp_path / "results" / study / "summary.json").exists(), study

    runs = _runs(tmp_path)
    parents = [r for r in runs if r.data.tags.get("lmcal.kind") == "invocation"]
    children = [r for r in runs if "snakemake.rule" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == len(runs) - 1
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    assert all(r.info.status == "FINISHED" for r in children)
    n_jobs = res.stderr.count("Finished jobid") - 1  # minus rule all, which runs no script
    assert len(children) == n_jobs
    assert len({r.data.tags["job_key"] for r in children}) == len(children)

    again = snakemake(tmp_path, "--cores", "2")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    assert len(_runs(tmp_path)) == len(runs), "an unchanged rerun must add no runs"

    # the Snakemake report: every study's figures, tables.html and summary.json, embedded, each with a caption
    report = snakemake(tmp_path, "--report", str(tmp_path / "report.html"))
    assert report.returncode == 0, (report.stdout + report.stderr)[-5000:]
    assert report_problems(tmp_path, tmp_path / "report.html", tiny["studies"]) == []
