"""MLflow side of the spool: turn job records (``lmcal.core.spool``) into MLflow runs.

One ``SpoolLogger`` lives in the Snakemake main process (started by ``tracking.start_parent`` in ``onstart``,
flushed by ``tracking.finish_parent`` in ``onsuccess``/``onerror``). A background thread polls the invocation's
spool every ``LMCAL_SPOOL_POLL_S`` seconds (default 0.5): a new record becomes a RUNNING child run, its events
are logged as they arrive, and its end.json closes the run with the job's own status and end time. Only a run
that FINISHED replaces the older FINISHED run of the same job key (deleted) and supersedes the other older runs
of its rule and wildcards (tagged ``superseded``), so a crashed rerun never leaves a job without its result.
A record whose process is gone without an end.json (same host), or that is still open when the invocation
ends, is a crashed job: its events and log are logged and the run is closed FAILED. A record is deleted only
after its run is closed, so records a dead invocation left behind are logged by the next one.

Only this process talks to the store, so parallel jobs never contend for the SQLite write lock; the retry
on "database is locked" stays for stores shared with other invocations or direct-mode jobs.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from lmcal.core.spool import END, EVENTS, EXPERIMENT, START, repo_root, tracking_uri, write_json_atomic

ENV_POLL = "LMCAL_SPOOL_POLL_S"
RUN_ID_FILE, OFFSET_FILE = "run_id.json", "offset.json"  # the logger's progress, kept in the record
STALE_START_S = 3600.0  # open_record writes start.json within milliseconds of creating the directory


def _retry(fn: Callable, attempts: int = 8, base: float = 0.25) -> Callable:
    """Retry MLflow calls that fail because another process holds the SQLite write lock."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        for i in range(attempts):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # MLflow wraps sqlite errors in several exception types
                if "locked" not in str(exc).lower() or i == attempts - 1:
                    raise
                time.sleep(base * 2**i)

    return wrapped


def client():
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri())


# MLflow 3.x's UI opens an experiment by its kind: without this tag it guesses "GenAI" (a traces overview);
# custom_model_development opens the runs table. The note is the experiment's description in the UI.
EXPERIMENT_TAGS = {
    "mlflow.experimentKind": "custom_model_development",
    "mlflow.note.content": ("lmcal: one parent run per Snakemake invocation (`invoke-<time>`), one child run per "
                            "job, tagged with its rule (`snakemake.rule`), wildcards (`wc.*`) and job key. "
                            "Inputs it read are the run's datasets; outputs and the rule's log are its artifacts. "
                            "Runs tagged `superseded` were replaced by a later run of the same rule and wildcards."),
}


def _tag_experiment(c, exp) -> None:
    for k, v in EXPERIMENT_TAGS.items():
        if exp.tags.get(k) != v:
            _retry(c.set_experiment_tag)(exp.experiment_id, k, v)


def ensure_experiment(name: str = EXPERIMENT) -> str:
    """Experiment id, creating it with artifacts under the repo-root `mlartifacts/` (not a CWD-relative mlruns)
    for a local store; a tracking server keeps its own artifact location (its clients may be on other hosts).
    The experiment carries ``EXPERIMENT_TAGS`` (also set on an experiment made by an older lmcal)."""
    c = client()
    exp = _retry(c.get_experiment_by_name)(name)
    if exp is not None:
        _tag_experiment(c, exp)
        return exp.experiment_id
    location = None
    if not tracking_uri().startswith(("http://", "https://")):
        artifacts = (repo_root() / "mlartifacts").resolve()
        artifacts.mkdir(parents=True, exist_ok=True)
        location = artifacts.as_uri()
    try:
        return _retry(c.create_experiment)(name, artifact_location=location, tags=EXPERIMENT_TAGS)
    except Exception:
        exp = _retry(c.get_experiment_by_name)(name)  # another process created it first
        if exp is None:
            raise
        return exp.experiment_id


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _create_run(c, exp_id: str, start: dict) -> str:
    """The job's child run, RUNNING. Older runs of the job are left alone until this one finishes
    (``_replace_older``): a job killed mid-run must not leave its rule and wildcards without a finished run."""
    run = _retry(c.create_run)(exp_id, start_time=start["started_ms"], tags=start["tags"], run_name=start["run_name"])
    return run.info.run_id


def _replace_older(c, exp_id: str, start: dict, run_id: str) -> None:
    """Once ``run_id`` has FINISHED: delete the older FINISHED runs with the same job key (an identical rerun
    replaces them) and tag every other older run of the same rule and wildcards ``superseded`` (runs with other
    inputs or settings, and failed attempts, which stay visible as history). Idempotent."""
    rule, wildcards, key = start["rule"], start["wildcards"], start["tags"]["job_key"]
    wc_filter = " and ".join(f"tags.`wc.{k}` = '{v}'" for k, v in wildcards.items())
    flt = f"tags.`snakemake.rule` = '{rule}'" + (f" and {wc_filter}" if wc_filter else "")
    for old in _retry(c.search_runs)([exp_id], filter_string=flt, max_results=1000):
        if old.info.run_id == run_id or old.info.start_time > start["started_ms"]:
            continue  # this run, or a newer one (logged out of order by a later invocation's drain)
        if old.data.tags.get("job_key") == key and old.info.status == "FINISHED":
            _retry(c.delete_run)(old.info.run_id)
        elif old.data.tags.get("superseded") != "true":
            _retry(c.set_tag)(old.info.run_id, "superseded", "true")


def _log_dataset(c, run_id: str, path: Path, event: dict) -> None:
    import mlflow.data
    import pandas as pd
    from mlflow.entities import DatasetInput, InputTag

    ds = mlflow.data.from_pandas(pd.read_pickle(path), name=event["name"], source=event["source"])
    _retry(c.log_inputs)(run_id, datasets=[DatasetInput(ds._to_mlflow_entity(),
                                                          [InputTag("mlflow.data.context", event["context"])])])


def _log_dataset_files(c, run_id: str, files: list[dict]) -> None:
    """Data files a job read (``tracking.dataset_inputs``) as dataset inputs: name, digest, local source."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    inputs = [DatasetInput(Dataset(name=f["name"], digest=f["digest"], source_type="local",
                                   source=json.dumps({"uri": f["path"]})),
                           [InputTag("mlflow.data.context", f["context"])]) for f in files]
    _retry(c.log_inputs)(run_id, datasets=inputs)


def _log_events(c, run_id: str, record: Path, offset: int) -> int:
    """Log the complete lines of events.jsonl past ``offset``; returns the new offset."""
    from mlflow.entities import Metric, Param, RunTag

    with open(record / EVENTS, "rb") as f:
        f.seek(offset)
        data = f.read()
    data = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next poll
    params, tags, metrics = {}, {}, []
    for line in data.splitlines():
        ev = json.loads(line)
        for k, v in ev.get("params", {}).items():  # a later clash within the batch: see below
            params[f"job.{k}" if k in params and str(params[k]) != str(v) else k] = v
        tags.update(ev.get("tags", {}))
        metrics += [Metric(k, v, ts, step) for k, v, ts, step in ev.get("metrics", [])]
        if "artifact" in ev:
            _retry(c.log_artifact)(run_id, str(record / ev["artifact"]), ev["dir"])
        if "dataset" in ev:
            _log_dataset(c, run_id, record / ev["dataset"], ev)
        if "dataset_files" in ev:
            _log_dataset_files(c, run_id, ev["dataset_files"])
    if params:
        # MLflow refuses a whole batch if one key was logged before with another value (e.g. an adapter logging a
        # key the rule's params already hold), which would leave the run RUNNING forever: such a key is logged
        # under "job.<key>" instead, so nothing is lost and the record still closes.
        before = _retry(c.get_run)(run_id).data.params
        params = {(f"job.{k}" if k in before and before[k] != str(v) else k): v for k, v in params.items()}
        params = {k: v for k, v in params.items() if before.get(k) != str(v)}
    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), 100):
        _retry(c.log_batch)(run_id, params=items[i : i + 100])
    tag_items = [RunTag(k, v) for k, v in tags.items()]
    for i in range(0, len(tag_items), 100):
        _retry(c.log_batch)(run_id, tags=tag_items[i : i + 100])
    for i in range(0, len(metrics), 1000):
        _retry(c.log_batch)(run_id, metrics=metrics[i : i + 1000])
    return offset + len(data)


def _process_gone(start: dict) -> bool:
    """True when the job ran on this host and its process no longer exists (it can only be checked here)."""
    if start.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(start["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


def ingest_record(c, exp_id: str, record: Path, *, final: bool = False) -> bool:
    """Bring one record's run up to date; True when the run is closed and the record deleted.

    ``final``: the invocation is ending, so a record without end.json is a crashed job."""
    start = _read_json(record / START)
    if start is None:  # still being created, or the job died inside open_record (then there is nothing to log)
        if final or time.time() - record.stat().st_mtime > STALE_START_S:
            shutil.rmtree(record, ignore_errors=True)
            return True
        return False
    end = _read_json(record / END)  # read before the events: everything written before end.json gets logged
    run_id = (_read_json(record / RUN_ID_FILE) or {}).get("run_id")
    if run_id is None:
        run_id = _create_run(c, exp_id, start)
        write_json_atomic({"run_id": run_id}, record / RUN_ID_FILE)
    offset = (_read_json(record / OFFSET_FILE) or {}).get("offset", 0)
    new_offset = _log_events(c, run_id, record, offset)
    if new_offset != offset:
        write_json_atomic({"offset": new_offset}, record / OFFSET_FILE)
    if end is None:
        if not (final or _process_gone(start)):
            return False  # still running
        if (record / END).exists():  # it finished between the two reads: close it with its own status
            return ingest_record(c, exp_id, record, final=final)
        log = start.get("log")
        if log and Path(log).is_file():
            _retry(c.log_artifact)(run_id, log, "logs")
        _retry(c.set_tag)(run_id, "lmcal.crashed", "true")
        end = {"status": "FAILED", "ended_ms": int(time.time() * 1000)}
    _retry(c.set_terminated)(run_id, end["status"], end_time=end["ended_ms"])
    if end["status"] == "FINISHED":
        _replace_older(c, exp_id, start, run_id)
    shutil.rmtree(record, ignore_errors=True)
    return True


class SpoolLogger:
    """Logs one spool directory's records to MLflow from a background thread (see module docstring)."""

    def __init__(self, spool: Path, poll_s: float | None = None):
        self.spool = Path(spool)
        self.spool.mkdir(parents=True, exist_ok=True)
        self.poll_s = float(os.environ.get(ENV_POLL, "0.5")) if poll_s is None else poll_s
        self._c = client()
        self._exp = ensure_experiment()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._errors: dict[str, str] = {}
        self.n_closed = 0

    def start(self) -> SpoolLogger:
        self._thread = threading.Thread(target=self._loop, name="lmcal-spool-logger", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.poll()

    def ingest(self, record: Path, *, final: bool = False) -> bool:
        with self._lock:
            try:
                closed = ingest_record(self._c, self._exp, record, final=final)
            except Exception as exc:  # a store that is down or a bad record must not stop the others
                msg = f"{type(exc).__name__}: {exc}"
                if self._errors.get(record.name) != msg:  # say it once per record and error, not every poll
                    print(f"lmcal tracking: could not log {record} yet ({msg})", file=sys.stderr, flush=True)
                self._errors[record.name] = msg
                return False
            self._errors.pop(record.name, None)
            self.n_closed += closed
            return closed

    def poll(self, *, final: bool = False) -> list[Path]:
        """One pass over the spool; returns the records still open."""
        records = sorted(p for p in self.spool.iterdir() if p.is_dir()) if self.spool.is_dir() else []
        return [r for r in records if not self.ingest(r, final=final)]

    def stop(self) -> list[Path]:
        """Stop the thread and log everything left, closing unfinished records as FAILED; returns the records
        that could not be logged (kept on disk for the next invocation)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        left = self.poll(final=True)
        if left:
            print(f"lmcal tracking: {len(left)} run record(s) could not be logged and stay in {self.spool} "
                  "for the next invocation", file=sys.stderr, flush=True)
        elif self.spool.is_dir() and not any(self.spool.iterdir()):
            self.spool.rmdir()
        return left


def drain_leftovers(root: Path, current: Path) -> None:
    """Log the records that earlier invocations (killed before their ``onsuccess``/``onerror``) left behind, and
    close their parents FAILED. Records of jobs that may still run on another host stay until they end."""
    if not root.is_dir():
        return
    for spool in sorted(p for p in root.iterdir() if p.is_dir() and p != current):
        logger = SpoolLogger(spool, poll_s=0)
        if logger.poll() or any(spool.iterdir()):
            continue
        spool.rmdir()
        c = logger._c
        try:
            parent = _retry(c.get_run)(spool.name)
        except Exception:  # the direct-mode spool, or a parent deleted meanwhile
            continue
        if parent.info.status == "RUNNING":
            _retry(c.set_terminated)(spool.name, "FAILED")
