import os
from types import SimpleNamespace

import pandas as pd
import pytest
from lmcal.core import io, tracking
from mlflow.tracking import MlflowClient
from snakemake.iocontainers import Namedlist


def fake_job(tmp_path, rule="score", wildcards=None, params=None, out_name="out.json"):
    wildcards = wildcards or {"model": "m1"}
    params = params or {"temperature": 1.0, "nested": {"a": [1, 2]}}
    inp = tmp_path / "in.json"
    if not inp.exists():
        io.write_json({"x": 1}, inp)
    return SimpleNamespace(
        rule=rule, threads=1,
        wildcards=Namedlist(fromdict=wildcards), params=Namedlist(fromdict=params),
        input=Namedlist(fromdict={"data": str(inp)}),
        output=Namedlist(fromdict={"result": str(tmp_path / out_name)}),
        log=Namedlist([str(tmp_path / "logs" / f"{rule}.log")]),
    )


def runs(uri, **kw):
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(tracking.EXPERIMENT)
    return c.search_runs([exp.experiment_id], max_results=100, **kw) if exp else []


def run_job(smk, value=1.0):
    with tracking.job_run(smk) as run:
        print("hello from the job")
        io.write_json({"value": value}, smk.output.result)
        run.log_metrics({"value": value, "nested": {"b": 2.0}})
        run.log_table(pd.DataFrame({"a": [1, 2]}), "tables/t.parquet")


def test_parent_and_child_runs_with_tags_params_artifacts(mlflow_store, tmp_path):
    parent = tracking.start_parent({"seed": 0})
    assert os.environ[tracking.ENV_PARENT] == parent
    smk = fake_job(tmp_path)
    run_job(smk)
    tracking.finish_parent("FINISHED")
    all_runs = runs(mlflow_store)
    assert len(all_runs) == 2
    child = next(r for r in all_runs if r.info.run_id != parent)
    assert child.info.status == "FINISHED"
    assert child.data.tags["mlflow.parentRunId"] == parent
    assert child.data.tags["snakemake.rule"] == "score" and child.data.tags["wc.model"] == "m1"
    assert len(child.data.tags["job_key"]) == 64
    assert child.data.params["temperature"] == "1.0" and child.data.params["nested.a"] == "[1, 2]"
    assert child.data.metrics == {"value": 1.0, "nested.b": 2.0}
    arts = {a.path for a in MlflowClient(mlflow_store).list_artifacts(child.info.run_id, "outputs")}
    assert "outputs/out.json" in arts
    assert "hello from the job" in open(smk.log[0]).read()
    assert runs(mlflow_store, filter_string=f"attributes.run_id = '{parent}'")[0].info.status == "FINISHED"


def test_identical_rerun_replaces_run_and_changed_rerun_supersedes(mlflow_store, tmp_path):
    tracking.start_parent({})
    run_job(fake_job(tmp_path))
    run_job(fake_job(tmp_path))  # same rule, wildcards, params, inputs: replaces
    children = [r for r in runs(mlflow_store) if "snakemake.rule" in r.data.tags]
    assert len(children) == 1
    run_job(fake_job(tmp_path, params={"temperature": 0.9}))  # changed params: new run, old one superseded
    children = [r for r in runs(mlflow_store) if "snakemake.rule" in r.data.tags]
    assert len(children) == 2
    assert sorted(r.data.tags.get("superseded", "no") for r in children) == ["no", "true"]


def test_invocation_without_jobs_leaves_no_run(mlflow_store):
    tracking.start_parent({})
    tracking.finish_parent("FINISHED")
    assert runs(mlflow_store) == []


def test_failed_job_is_marked_failed_and_traceback_logged(mlflow_store, tmp_path):
    smk = fake_job(tmp_path, rule="boom")
    with pytest.raises(RuntimeError):
        with tracking.job_run(smk):
            raise RuntimeError("kaboom")
    (r,) = runs(mlflow_store)
    assert r.info.status == "FAILED"
    assert "kaboom" in open(smk.log[0]).read()


def test_tracking_can_be_disabled(mlflow_store, tmp_path, monkeypatch):
    monkeypatch.setenv(tracking.ENV_DISABLE, "off")
    run_job(fake_job(tmp_path))
    assert runs(mlflow_store) == []


def test_job_key_depends_on_input_content_not_path_mtime(tmp_path):
    a = tmp_path / "a.json"
    io.write_json({"x": 1}, a)
    k1 = tracking.job_key("r", {}, {}, tracking.input_digest([str(a)]))
    os.utime(a, (0, 0))
    assert tracking.job_key("r", {}, {}, tracking.input_digest([str(a)])) == k1
    io.write_json({"x": 2}, a)
    assert tracking.job_key("r", {}, {}, tracking.input_digest([str(a)])) != k1


def test_flatten():
    assert tracking.flatten({"a": {"b": 1, "c": [1, 2]}, "d": [{"e": 1}]}) == {"a.b": 1, "a.c": [1, 2], "d.0.e": 1}
