"""MLflow tracking: one parent run per workflow invocation, one child run per job.

The parent is created in Snakemake's `onstart` hook (never at Snakefile top level, which runs on every parse)
and its id travels to jobs in ``LMCAL_PARENT_RUN_ID``. Each job opens a child run tagged with its rule,
wildcards and a job key (a hash of rule, wildcards, params and input digests). A rerun of the same job deletes
the older identical run, and older runs of the same rule and wildcards are tagged ``superseded``, so the UI
never shows duplicates. An invocation that ran no job deletes its empty parent, so an unchanged rerun adds
no runs.

SQLite is shared by parallel jobs: the database and experiment are created once in `onstart`, logging is
batched, and every client call retries on "database is locked".
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

ENV_PARENT = "LMCAL_PARENT_RUN_ID"
ENV_DISABLE = "LMCAL_TRACKING"  # "0" / "off" disables tracking entirely
EXPERIMENT = os.environ.get("LMCAL_EXPERIMENT", "lmcal")
ARTIFACT_SUFFIXES = {".parquet", ".json", ".png", ".tsv", ".csv", ".txt", ".yaml", ".log"}
MAX_ARTIFACT_BYTES = 64 * 2**20


def repo_root() -> Path:
    return Path(os.environ.get("LMCAL_ROOT", Path.cwd())).resolve()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def enabled() -> bool:
    return os.environ.get(ENV_DISABLE, "1").lower() not in {"0", "off", "false", "no"}


def _retry(fn: Callable, attempts: int = 8, base: float = 0.25) -> Callable:
    """Retry MLflow calls that fail because another job holds the SQLite write lock."""

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


def ensure_experiment(name: str = EXPERIMENT) -> str:
    """Experiment id, creating it with artifacts under the repo-root `mlartifacts/` (not a CWD-relative mlruns)."""
    c = client()
    exp = _retry(c.get_experiment_by_name)(name)
    if exp is not None:
        return exp.experiment_id
    artifacts = (repo_root() / "mlartifacts").resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    try:
        return _retry(c.create_experiment)(name, artifact_location=artifacts.as_uri())
    except Exception:
        exp = _retry(c.get_experiment_by_name)(name)  # another process created it first
        if exp is None:
            raise
        return exp.experiment_id


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=repo_root(), timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists to dotted keys, for MLflow params."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(d, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in d):
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix.rstrip(".")] = d
    return out


def config_sha(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    # Small files are hashed by content, so a rerun that reproduces an input byte for byte keeps its job key;
    # large ones (model weights) by size and mtime, to avoid re-reading gigabytes per job.
    st = path.stat()
    if st.st_size > 16 * 2**20:
        return f"{st.st_size}:{int(st.st_mtime)}"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def input_digest(paths: list[str]) -> dict[str, str]:
    out = {}
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file())
            out[str(p)] = hashlib.sha256("".join(f"{f.relative_to(p)}:{_file_digest(f)}" for f in files).encode()).hexdigest()
        elif p.exists():
            out[str(p)] = _file_digest(p)
    return out


def job_key(rule: str, wildcards: dict, params: dict, inputs: dict[str, str]) -> str:
    blob = json.dumps({"rule": rule, "wildcards": wildcards, "params": params, "inputs": inputs}, sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# ---- parent run (Snakemake hooks) ----

def start_parent(config: dict, *, extra_tags: dict[str, str] | None = None) -> str | None:
    """Create the invocation's parent run and export its id to jobs; returns the id."""
    if not enabled():
        return None
    exp_id = ensure_experiment()
    c = client()
    tags = {"lmcal.kind": "invocation", "git_sha": git_sha(), "config_sha": config_sha(config),
            "host": socket.gethostname(), "argv": " ".join(sys.argv)[:5000], **(extra_tags or {})}
    run = _retry(c.create_run)(exp_id, run_name=f"invoke-{time.strftime('%Y%m%d-%H%M%S')}", tags=tags)
    rid = run.info.run_id
    _retry(c.log_dict)(rid, config, "config.json")
    os.environ[ENV_PARENT] = rid
    return rid


def finish_parent(status: str = "FINISHED") -> None:
    """Close the parent; an invocation that ran no job leaves no run behind."""
    rid = os.environ.get(ENV_PARENT)
    if not rid or not enabled():
        return
    c = client()
    exp_id = _retry(c.get_run)(rid).info.experiment_id
    children = _retry(c.search_runs)([exp_id], filter_string=f"tags.mlflow.parentRunId = '{rid}'", max_results=1)
    if not children and status == "FINISHED":
        _retry(c.delete_run)(rid)
    else:
        _retry(c.set_terminated)(rid, status)


# ---- child runs (scripts) ----

class JobRun:
    """Thin batched-logging wrapper around one MLflow run."""

    def __init__(self, run_id: str | None):
        self.run_id = run_id
        self._c = client() if run_id else None

    def _call(self, name: str, *args, **kwargs):
        if self._c is not None:
            return _retry(getattr(self._c, name))(self.run_id, *args, **kwargs)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = {k: v for k, v in flatten(params).items()}
        items = [Param(k[:250], json.dumps(v, default=str)[:6000] if not isinstance(v, str) else v[:6000])
                 for k, v in flat.items()]
        for i in range(0, len(items), 100):
            self._call("log_batch", params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k[:250], float(v), ts, step or 0) for k, v in flatten(metrics).items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v]
        for i in range(0, len(items), 1000):
            self._call("log_batch", metrics=items[i : i + 1000])

    def log_metric_series(self, name: str, values, steps=None) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        steps = list(steps) if steps is not None else list(range(len(values)))
        items = [Metric(name, float(v), ts, int(s)) for v, s in zip(values, steps) if v == v]
        for i in range(0, len(items), 1000):
            self._call("log_batch", metrics=items[i : i + 1000])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._call("log_batch", tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    def log_artifact(self, path: str | os.PathLike, artifact_dir: str | None = None) -> None:
        self._call("log_artifact", str(path), artifact_dir)

    def log_figure(self, fig, artifact_path: str) -> None:
        self._call("log_figure", fig, artifact_path)

    def log_table(self, df, artifact_path: str) -> None:
        """Log a DataFrame as a parquet artifact (``artifact_path`` ends in .parquet)."""
        if self._c is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / Path(artifact_path).name
            df.to_parquet(p, index=False)
            self.log_artifact(p, str(Path(artifact_path).parent) if Path(artifact_path).parent != Path(".") else None)

    def log_dict(self, obj: dict, artifact_path: str) -> None:
        self._call("log_dict", obj, artifact_path)

    def log_dataset(self, df, name: str, context: str, source: str | None = None) -> None:
        """Record a dataset as an MLflow run input (schema + digest), e.g. the documents a job read."""
        if self._c is None:
            return
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag

        ds = mlflow.data.from_pandas(df, name=name, source=source)
        self._call("log_inputs", datasets=[DatasetInput(ds._to_mlflow_entity(), [InputTag("mlflow.data.context", context)])])


def _named(namedlist) -> dict[str, Any]:
    try:
        return {k: v for k, v in namedlist.items()}
    except AttributeError:
        return {}


def _output_files(paths: list[str]) -> Iterator[tuple[Path, str | None]]:
    for p in map(Path, paths):
        if p.is_file() and p.suffix in ARTIFACT_SUFFIXES and p.stat().st_size <= MAX_ARTIFACT_BYTES:
            yield p, "outputs"
        elif p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix in ARTIFACT_SUFFIXES and f.stat().st_size <= MAX_ARTIFACT_BYTES:
                    yield f, str(Path("outputs", p.name, f.relative_to(p).parent))


@contextlib.contextmanager
def _redirect_to(log_path: str | None) -> Iterator[None]:
    """Send this process's stdout/stderr (including C-level writes and tqdm) to the rule's log file."""
    if not log_path:
        yield
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush(), sys.stderr.flush()
    saved_fds, saved_streams = (os.dup(1), os.dup(2)), (sys.stdout, sys.stderr)
    with open(log_path, "a", buffering=1) as fh:
        os.dup2(fh.fileno(), 1), os.dup2(fh.fileno(), 2)
        sys.stdout = sys.stderr = fh
        try:
            yield
        finally:
            fh.flush()
            sys.stdout, sys.stderr = saved_streams
            os.dup2(saved_fds[0], 1), os.dup2(saved_fds[1], 2)
            os.close(saved_fds[0]), os.close(saved_fds[1])


@contextlib.contextmanager
def job_run(smk, *, log_outputs: bool = True) -> Iterator[JobRun]:
    """Child MLflow run for one Snakemake job (see module docstring)."""
    log_path = smk.log[0] if len(smk.log) else None
    with _redirect_to(log_path):
        try:
            import torch

            torch.set_num_threads(max(1, int(smk.threads)))
        except ImportError:
            pass
        if not enabled():
            yield JobRun(None)
            return
        rule = smk.rule
        wildcards = _named(smk.wildcards)
        params = _named(smk.params)
        key = job_key(rule, wildcards, params, input_digest(list(smk.input)))
        exp_id = ensure_experiment()
        c = client()
        wc_filter = " and ".join(f"tags.`wc.{k}` = '{v}'" for k, v in wildcards.items())
        flt = f"tags.`snakemake.rule` = '{rule}'" + (f" and {wc_filter}" if wc_filter else "")
        for old in _retry(c.search_runs)([exp_id], filter_string=flt, max_results=1000):
            if old.data.tags.get("job_key") == key:
                _retry(c.delete_run)(old.info.run_id)  # an identical rerun replaces the old run
            else:
                _retry(c.set_tag)(old.info.run_id, "superseded", "true")
        tags = {"snakemake.rule": rule, "job_key": key, "git_sha": git_sha(), "host": socket.gethostname(),
                **{f"wc.{k}": str(v) for k, v in wildcards.items()}}
        if os.environ.get("SLURM_JOB_ID"):
            tags["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
        parent = os.environ.get(ENV_PARENT)
        if parent:
            tags["mlflow.parentRunId"] = parent
        wc_text = ",".join(f"{k}={v}" for k, v in wildcards.items())
        run_info = _retry(c.create_run)(exp_id, run_name=f"{rule}[{wc_text}]" if wc_text else rule, tags=tags)
        run = JobRun(run_info.info.run_id)
        run.log_params(params)
        status = "FAILED"
        try:
            yield run
            status = "FINISHED"
        except BaseException:
            traceback.print_exc()  # into the rule's log, before the redirect ends
            raise
        finally:
            try:
                if log_outputs and status == "FINISHED":
                    for path, art_dir in _output_files(list(smk.output)):
                        run.log_artifact(path, art_dir)
                sys.stdout.flush(), sys.stderr.flush()
                if log_path and Path(log_path).exists():
                    run.log_artifact(log_path, "logs")
            finally:
                _retry(c.set_terminated)(run.run_id, status)
