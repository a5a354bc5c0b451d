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


# ---- the spool: jobs write records, the invocation's logger turns them into runs ----

JOB_SCRIPT = """
import json, os, sys
from types import SimpleNamespace
from snakemake.iocontainers import Namedlist
from lmcal.core import tracking

spec = json.loads(sys.argv[1])
smk = SimpleNamespace(rule=spec["rule"], threads=2, wildcards=Namedlist(fromdict={"model": "m1"}),
                      params=Namedlist(fromdict={"temperature": 0.5}), input=Namedlist(fromdict={}),
                      output=Namedlist(fromdict={"result": spec["out"]}), log=Namedlist([spec["log"]]))
with tracking.job_run(smk) as run:
    print("job says hi")
    run.log_metrics({"value": 1.5})
    run.log_metric_series("loss", [3.0, 2.0, 1.0])
    run.set_tags({"phase": "test"})
    run.log_dict({"a": 1}, "extra/d.json")
    if spec.get("crash"):
        sys.stdout.flush()
        os.kill(os.getpid(), 9)  # no Python cleanup: the job never writes its end record
    open(spec["out"], "w").write("{}")
print(json.dumps({"mlflow": "mlflow" in sys.modules, "torch": "torch" in sys.modules,
                  "omp": os.environ.get("OMP_NUM_THREADS")}))
"""


@pytest.fixture(autouse=True)
def no_logger_left():
    """start_parent writes os.environ directly (as it must for Snakemake's jobs): undo it around each test."""
    tracking.stop_logger()
    yield
    tracking.stop_logger()
    os.environ.pop(tracking.ENV_PARENT, None)


def spawn_job(tmp_path, rule="score", crash=False):
    """Run a job_run in a separate process, as Snakemake runs a rule's script; returns (returncode, stdout)."""
    import json
    import subprocess
    import sys

    script = tmp_path / "job.py"
    script.write_text(JOB_SCRIPT)
    spec = {"rule": rule, "out": str(tmp_path / f"{rule}.json"), "log": str(tmp_path / "logs" / f"{rule}.log"),
            "crash": crash}
    res = subprocess.run([sys.executable, str(script), json.dumps(spec)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "OMP_NUM_THREADS": "7"})
    return res.returncode, res.stdout


def wait_for_child(uri, rule, status, timeout=30.0):
    """The child run of ``rule`` once it has ``status``, polled while the invocation is still running."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        found = [r for r in runs(uri) if r.data.tags.get("snakemake.rule") == rule and r.info.status == status]
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no {status} run of {rule} within {timeout} s: {[r.info.status for r in runs(uri)]}")


def test_job_in_another_process_spools_without_mlflow_and_appears_as_it_ends(mlflow_store, tmp_path):
    parent = tracking.start_parent({})
    spool = os.environ[tracking.ENV_SPOOL]
    rc, out = spawn_job(tmp_path)
    assert rc == 0
    import json

    seen = json.loads(out.strip().splitlines()[-1])
    assert seen == {"mlflow": False, "torch": False, "omp": "2"}  # the rule's threads, without importing torch
    (child,) = wait_for_child(mlflow_store, "score", "FINISHED")  # before finish_parent: logged as it ended
    assert child.data.tags["mlflow.parentRunId"] == parent and child.data.tags["wc.model"] == "m1"
    assert child.data.tags["phase"] == "test" and len(child.data.tags["job_key"]) == 64
    assert child.data.params == {"temperature": "0.5"}
    assert child.data.metrics == {"value": 1.5, "loss": 1.0}
    history = MlflowClient(mlflow_store).get_metric_history(child.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 3.0), (1, 2.0), (2, 1.0)]
    c = MlflowClient(mlflow_store)
    arts = {a.path for d in ("outputs", "logs", "extra") for a in c.list_artifacts(child.info.run_id, d)}
    assert arts == {"outputs/score.json", "logs/score.log", "extra/d.json"}
    log_text = open(c.download_artifacts(child.info.run_id, "logs/score.log", str(tmp_path))).read()
    assert "job says hi" in log_text
    assert child.info.end_time >= child.info.start_time
    tracking.finish_parent("FINISHED")
    assert not os.path.exists(spool)  # every record logged, the invocation's spool removed
    assert runs(mlflow_store, filter_string=f"attributes.run_id = '{parent}'")[0].info.status == "FINISHED"


def test_identical_rerun_in_other_processes_replaces_its_run(mlflow_store, tmp_path):
    tracking.start_parent({})
    for _ in range(2):
        assert spawn_job(tmp_path)[0] == 0
        wait_for_child(mlflow_store, "score", "FINISHED")
    tracking.finish_parent("FINISHED")
    children = [r for r in runs(mlflow_store) if "snakemake.rule" in r.data.tags]
    assert len(children) == 1 and children[0].info.status == "FINISHED"


def test_killed_job_becomes_a_failed_run_with_what_it_logged(mlflow_store, tmp_path):
    tracking.start_parent({})
    rc, _ = spawn_job(tmp_path, rule="boom", crash=True)
    assert rc == -9
    (r,) = wait_for_child(mlflow_store, "boom", "FAILED")  # its process is gone: no need to wait for the end
    assert r.data.tags["lmcal.crashed"] == "true" and r.data.metrics == {"value": 1.5, "loss": 1.0}
    arts = {a.path for a in MlflowClient(mlflow_store).list_artifacts(r.info.run_id, "logs")}
    assert arts == {"logs/boom.log"}
    tracking.finish_parent("FAILED")


def test_record_still_open_when_the_invocation_ends_is_failed(mlflow_store, tmp_path):
    from lmcal.core import spool

    tracking.start_parent({})
    smk = fake_job(tmp_path, rule="hung")
    record = tracking._open_job_record(smk, None)  # a job on another node that never reported back
    spool.JobRun(record).log_metrics({"step_reached": 3.0})
    tracking.finish_parent("FAILED")
    (r,) = [r for r in runs(mlflow_store) if r.data.tags.get("snakemake.rule") == "hung"]
    assert r.info.status == "FAILED" and r.data.metrics == {"step_reached": 3.0}


def test_records_left_by_a_killed_invocation_are_logged_by_the_next(mlflow_store, tmp_path):
    dead_parent = tracking.start_parent({})
    tracking._LOGGER._stop.set()  # the invocation dies: its logger never runs again
    tracking._LOGGER._thread.join()
    tracking._LOGGER = None
    run_job(fake_job(tmp_path))  # the job finishes and leaves its record in the dead invocation's spool
    assert not [r for r in runs(mlflow_store) if "snakemake.rule" in r.data.tags]
    os.environ.pop(tracking.ENV_SPOOL)
    new_parent = tracking.start_parent({})
    (child,) = [r for r in runs(mlflow_store) if "snakemake.rule" in r.data.tags]
    assert child.info.status == "FINISHED" and child.data.tags["mlflow.parentRunId"] == dead_parent
    assert child.data.metrics == {"value": 1.0, "nested.b": 2.0}
    status = {r.info.run_id: r.info.status for r in runs(mlflow_store)}
    assert status[dead_parent] == "FAILED" and status[new_parent] == "RUNNING"
    tracking.finish_parent("FINISHED")


def test_figures_dicts_tables_and_datasets_reach_mlflow(mlflow_store, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    smk = fake_job(tmp_path, rule="report")
    df = pd.DataFrame({"doc_id": ["a", "b"], "n_chars": [3, 4]})
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    with tracking.job_run(smk) as run:
        io.write_json({"ok": True}, smk.output.result)
        run.log_figure(fig, "figures/curve.png")
        run.log_dict({"k": [1, 2]}, "meta/info.yaml")
        run.log_table(df, "tables/t.parquet")
        run.log_dataset(df, name="docs", context="training", source="unit-test")
    plt.close(fig)
    (r,) = runs(mlflow_store)
    c = MlflowClient(mlflow_store)
    png = c.download_artifacts(r.info.run_id, "figures/curve.png", str(tmp_path))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    import yaml

    assert yaml.safe_load(open(c.download_artifacts(r.info.run_id, "meta/info.yaml", str(tmp_path)))) == {"k": [1, 2]}
    back = pd.read_parquet(c.download_artifacts(r.info.run_id, "tables/t.parquet", str(tmp_path)))
    pd.testing.assert_frame_equal(back, df)
    import mlflow.data

    (ds,) = c.get_run(r.info.run_id).inputs.dataset_inputs
    assert ds.dataset.name == "docs" and ds.tags[0].value == "training"
    assert ds.dataset.digest == mlflow.data.from_pandas(df, name="docs", source="unit-test").digest


@pytest.fixture
def mlflow_server(tmp_path, monkeypatch):
    """A local tracking server (127.0.0.1, sqlite backend, proxied artifacts); yields its URI."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(tmp_path / "server.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                                 "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                                 "--artifacts-destination", str(tmp_path / "server-artifacts")],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, (tmp_path / "server.log").read_text()[-3000:]
                time.sleep(0.5)
        uri = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("LMCAL_ROOT", str(tmp_path))
        monkeypatch.delenv("LMCAL_PARENT_RUN_ID", raising=False)
        yield uri
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_jobs_reach_a_tracking_server(mlflow_server, tmp_path):
    parent = tracking.start_parent({"seed": 1})
    assert spawn_job(tmp_path)[0] == 0
    (child,) = wait_for_child(mlflow_server, "score", "FINISHED")
    assert child.data.tags["mlflow.parentRunId"] == parent and child.data.metrics == {"value": 1.5, "loss": 1.0}
    arts = {a.path for a in MlflowClient(mlflow_server).list_artifacts(child.info.run_id, "outputs")}
    assert arts == {"outputs/score.json"}
    assert (tmp_path / "server-artifacts").is_dir()  # uploaded through the server, not to a local path
    tracking.finish_parent("FINISHED")
    assert runs(mlflow_server, filter_string=f"attributes.run_id = '{parent}'")[0].info.status == "FINISHED"


def test_a_job_param_clashing_with_a_rule_param_is_kept_and_the_run_still_finishes(mlflow_store, tmp_path):
    # the default run once left 9 V/D runs RUNNING: the adapter logged `seeds` ("0,1") over the rule param
    # `seeds` ("[0, 1]") and MLflow refused the whole batch on every poll
    tracking.start_parent({"seed": 0})
    smk = fake_job(tmp_path, params={"seeds": [0, 1], "lr": 0.1})
    with tracking.job_run(smk) as run:
        io.write_json({"value": 1}, smk.output.result)
        run.log_params({"seeds": "0,1", "lr": 0.1, "extra": 3})
    tracking.finish_parent("FINISHED")
    child = next(r for r in runs(mlflow_store) if "snakemake.rule" in r.data.tags)
    assert child.info.status == "FINISHED"
    p = child.data.params
    assert p["seeds"] == "[0, 1]" and p["job.seeds"] == "0,1" and p["lr"] == "0.1" and p["extra"] == "3"
    assert "job.lr" not in p  # the same value again is not a clash


def test_metric_names_mlflow_refuses_are_sanitised_and_the_run_still_finishes(mlflow_store, tmp_path):
    # one name with "~" (the wildcard spelling of paths) once made the store refuse every record of a rule
    tracking.start_parent({"seed": 0})
    smk = fake_job(tmp_path)
    with tracking.job_run(smk) as run:
        io.write_json({"value": 1}, smk.output.result)
        run.log_metrics({"seed~0.loss": 1.5, "ok.name": 2.0})
        run.log_metric_series("seed~1.curve", [3.0, 4.0])
    tracking.finish_parent("FINISHED")
    child = next(r for r in runs(mlflow_store) if "snakemake.rule" in r.data.tags)
    assert child.info.status == "FINISHED"
    assert child.data.metrics == {"seed_0.loss": 1.5, "ok.name": 2.0, "seed_1.curve": 4.0}
