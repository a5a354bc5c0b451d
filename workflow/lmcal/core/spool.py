"""Job-side run records: what a Snakemake job writes instead of talking to MLflow itself.

Importing MLflow and opening its store costs a job seconds; writing a few small files costs milliseconds. So a
job writes one *record* directory into the invocation's spool (on the shared filesystem, so jobs on other nodes
can write it too) and the invocation's logger (``lmcal.core.ingest``, in the Snakemake main process) turns it
into an MLflow run. Layout of ``<spool>/<record>/``:

- ``start.json``  rule, wildcards, job key, tags, run name, parent run, pid and host; written atomically at
  job start, so the logger can create the run (RUNNING) while the job works;
- ``events.jsonl`` one JSON object per line, appended and flushed per call: params, metrics, tags, artifacts
  (files staged under ``files/``), datasets (pickled frames under ``files/``, or
  data files the job reads, by path and digest); the logger tails complete lines;
- ``end.json``     status and end time; written atomically last. A record without one whose process is gone
  (or still open when the invocation ends) is a crashed job and becomes a FAILED run.

Nothing here imports MLflow, pandas or torch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

ENV_DISABLE = "LMCAL_TRACKING"  # "0" / "off" disables tracking entirely
ENV_SPOOL = "LMCAL_SPOOL_DIR"  # the running invocation's spool; set by start_parent for its jobs
EXPERIMENT = os.environ.get("LMCAL_EXPERIMENT", "lmcal")
START, EVENTS, END, FILES = "start.json", "events.jsonl", "end.json", "files"
MAX_PARAM_KEY, MAX_PARAM_VALUE, MAX_TAG_VALUE = 250, 6000, 5000


def repo_root() -> Path:
    return Path(os.environ.get("LMCAL_ROOT", Path.cwd())).resolve()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def enabled() -> bool:
    return os.environ.get(ENV_DISABLE, "1").lower() not in {"0", "off", "false", "no"}


def spool_root() -> Path:
    """Where every invocation keeps its spool: under Snakemake's own (git-ignored) state directory."""
    return repo_root() / ".snakemake" / "lmcal-spool"


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


def write_json_atomic(obj: Any, path: Path) -> None:
    """Write-then-rename, so a reader (on any node of a shared filesystem) sees the whole file or none. No fsync:
    this guards against a crashed job, not a crashed machine, and close() is what NFS publishes on."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, default=str)
    os.replace(tmp, path)


def stage_file(src: Path, dst: Path) -> None:
    """Snapshot ``src`` into the record: a hard link where the filesystem allows it (free), else a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def param_value(v: Any) -> str:
    return v[:MAX_PARAM_VALUE] if isinstance(v, str) else json.dumps(v, default=str)[:MAX_PARAM_VALUE]


def metric_key(name: str) -> str:
    """``name`` as MLflow accepts it: characters outside [alphanumerics _ - . space : /] become "_" (one bad
    name would otherwise make the store refuse the whole record, e.g. a wildcard-style ``seed~0.loss``)."""
    return re.sub(r"[^\w\-. :/]", "_", name)[:MAX_PARAM_KEY]


def metric_items(metrics: dict[str, Any], step: int | None, ts: int) -> list[list]:
    """[key, value, timestamp_ms, step] for every finite-or-inf numeric leaf; NaN and bools are dropped."""
    return [[metric_key(k), float(v), ts, int(step or 0)] for k, v in flatten(metrics).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v]


class JobRun:
    """What a job logs, written to its spool record. ``JobRun(None)`` (tracking disabled) drops everything."""

    def __init__(self, record: Path | None):
        self.record = record
        self._n_files = 0

    def _event(self, event: dict) -> None:
        if self.record is None:
            return
        line = json.dumps(event, default=str) + "\n"
        with open(self.record / EVENTS, "a") as f:  # one write per event: the logger reads whole lines only
            f.write(line)
            f.flush()

    def _file_slot(self, name: str) -> Path:
        """A fresh path under files/ for one staged artifact (numbered: two artifacts may share a name)."""
        self._n_files += 1
        slot = self.record / FILES / str(self._n_files)
        slot.mkdir(parents=True, exist_ok=True)
        return slot / name

    def log_params(self, params: dict[str, Any]) -> None:
        flat = {k[:MAX_PARAM_KEY]: param_value(v) for k, v in flatten(params).items()}
        if flat:
            self._event({"params": flat})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        items = metric_items(metrics, step, int(time.time() * 1000))
        if items:
            self._event({"metrics": items})

    def log_metric_series(self, name: str, values, steps=None) -> None:
        ts = int(time.time() * 1000)
        steps = list(steps) if steps is not None else list(range(len(values)))
        items = [[metric_key(name), float(v), ts, int(s)] for v, s in zip(values, steps) if v == v]
        if items:
            self._event({"metrics": items})

    def set_tags(self, tags: dict[str, Any]) -> None:
        if tags:
            self._event({"tags": {k: str(v)[:MAX_TAG_VALUE] for k, v in tags.items()}})

    def _log_staged(self, staged: Path, artifact_dir: str | None) -> None:
        self._event({"artifact": str(staged.relative_to(self.record)), "dir": artifact_dir})

    def log_artifact(self, path: str | os.PathLike, artifact_dir: str | None = None, *, link: bool = False) -> None:
        """Snapshot the file now: a copy, since the caller may write to it again before the logger uploads it.
        ``link``: a hard link instead, for files nobody appends to (Snakemake outputs: a rerun replaces them)."""
        if self.record is None:
            return
        src = Path(path)
        if not src.is_file():
            raise FileNotFoundError(f"log_artifact: {src} is not a file")
        dst = self._file_slot(src.name)
        if link:
            stage_file(src, dst)
        else:
            shutil.copyfile(src, dst)
        self._log_staged(dst, artifact_dir)

    @staticmethod
    def _split(artifact_path: str) -> tuple[str, str | None]:
        p = Path(artifact_path)
        return p.name, (str(p.parent) if p.parent != Path(".") else None)

    def log_figure(self, fig, artifact_path: str) -> None:
        """A matplotlib figure, saved as MLflow's log_figure saves it (``fig.savefig`` to the path's format)."""
        if self.record is None:
            return
        if not hasattr(fig, "savefig"):
            raise TypeError(f"log_figure takes a matplotlib figure, got {type(fig).__name__}")
        name, art_dir = self._split(artifact_path)
        dst = self._file_slot(name)
        fig.savefig(dst)
        self._log_staged(dst, art_dir)

    def log_table(self, df, artifact_path: str) -> None:
        """Log a DataFrame as a parquet artifact (``artifact_path`` ends in .parquet)."""
        if self.record is None:
            return
        name, art_dir = self._split(artifact_path)
        dst = self._file_slot(name)
        df.to_parquet(dst, index=False)
        self._log_staged(dst, art_dir)

    def log_dict(self, obj: dict, artifact_path: str) -> None:
        """JSON, or YAML for a .yaml/.yml path, as MLflow's log_dict writes them."""
        if self.record is None:
            return
        name, art_dir = self._split(artifact_path)
        dst = self._file_slot(name)
        with open(dst, "w") as f:
            if dst.suffix in {".yaml", ".yml"}:
                import yaml

                yaml.safe_dump(obj, f, indent=2, default_flow_style=False)
            else:
                json.dump(obj, f, indent=2)
        self._log_staged(dst, art_dir)

    def log_dataset(self, df, name: str, context: str, source: str | None = None) -> None:
        """Record a dataset as an MLflow run input (schema + digest), e.g. the documents a job read. The frame is
        pickled (exact dtypes, so the digest is the one MLflow computes in memory) and described by the logger."""
        if self.record is None:
            return
        dst = self._file_slot("dataset.pkl")
        df.to_pickle(dst)
        self._event({"dataset": str(dst.relative_to(self.record)), "name": name, "context": context,
                     "source": source})


    def log_dataset_files(self, files: list[dict[str, Any]]) -> None:
        """Record data files the job reads as MLflow dataset inputs: each {name, digest, path, context}; nothing
        is read here (the digest comes from the caller, who hashed the file for the job key already)."""
        if self.record is not None and files:
            self._event({"dataset_files": files})


def open_record(spool: Path, start: dict[str, Any]) -> Path:
    """Create a record directory in ``spool`` and publish its start.json (pid and host added here)."""
    record = spool / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:12]}"
    (record / FILES).mkdir(parents=True)
    (record / EVENTS).touch()
    start = {**start, "pid": os.getpid(), "host": socket.gethostname(), "started_ms": int(time.time() * 1000)}
    write_json_atomic(start, record / START)
    return record


def close_record(record: Path, status: str) -> bool:
    """Publish end.json; False when the invocation already closed the record (it judged the job crashed)."""
    if not (record / START).exists():
        return False
    write_json_atomic({"status": status, "ended_ms": int(time.time() * 1000)}, record / END)
    return True
