"""MLflow tracking: one parent run per workflow invocation, one child run per job.

The parent is created in Snakemake's `onstart` hook (never at Snakefile top level, which runs on every parse)
and its id travels to jobs in ``LMCAL_PARENT_RUN_ID``. Each job's child run is tagged with its rule, wildcards
and a job key (a hash of rule, wildcards, params and input digests). When a rerun of the same job finishes it
deletes the older identical FINISHED run, and older runs of the same rule and wildcards are tagged
``superseded``, so the UI never shows duplicates; a rerun that crashes leaves the older finished run in place.
An invocation that ran no job deletes its empty parent, so an unchanged rerun adds no runs.

Jobs never import MLflow (that and opening its store cost a job seconds): ``job_run`` writes a run record to
the invocation's spool (``LMCAL_SPOOL_DIR``, under ``.snakemake/`` on the shared filesystem; see
``lmcal.core.spool``) and the logger thread that ``onstart`` starts in the Snakemake main process logs it
(``lmcal.core.ingest``) while the job runs and as it ends; ``onsuccess``/``onerror`` flush it. Outside an
invocation (no spool in the environment) ``job_run`` logs its record itself when the job ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

from lmcal.core import ingest
from lmcal.core.ingest import _retry, client, ensure_experiment
from lmcal.core.spool import (  # noqa: F401 (re-exported: the tracking API lives here)
    ENV_DISABLE,
    ENV_SPOOL,
    EXPERIMENT,
    JobRun,
    close_record,
    enabled,
    flatten,
    open_record,
    repo_root,
    spool_root,
    tracking_uri,
)

ENV_PARENT = "LMCAL_PARENT_RUN_ID"
ARTIFACT_SUFFIXES = {".parquet", ".json", ".png", ".tsv", ".csv", ".txt", ".yaml", ".log"}
MAX_ARTIFACT_BYTES = 64 * 2**20
_LOGGER: ingest.SpoolLogger | None = None  # the invocation's logger, in the process that ran start_parent


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=repo_root(), timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


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


DATASET_SUFFIXES = {".parquet", ".safetensors", ".jsonl", ".json"}
DATASET_DIRS = {"data", "prompts", "evalsets"}  # results/data/<name>/, results/*/prompts/, results/*/evalsets/


def dataset_inputs(paths: list[str], digests: dict[str, str]) -> list[dict[str, str]]:
    """The data files among a job's inputs, as MLflow dataset inputs: documents, prompts, eval sets and token
    streams (a .parquet/.safetensors/.json(l) file under ``results/`` in a data, prompts or evalsets folder, or a
    ``tokens.*`` stream). Named by their path under results/ without the suffix (``data/wikitext/documents``);
    the digest is the one the job key uses (content hash, or size and mtime for files over 16 MiB)."""
    out = []
    for p in paths:
        path = Path(p)
        parts = path.parts
        if "results" not in parts or path.suffix not in DATASET_SUFFIXES or path.name == "manifest.json":
            continue
        under = Path(*parts[parts.index("results") + 1:])
        if not (DATASET_DIRS & set(under.parts[:-1]) or path.stem == "tokens") or str(path) not in digests:
            continue
        if path.suffix == ".json" and path.with_suffix(".parquet").exists():
            continue  # a prompts .json beside its .parquet is the parquet's metadata
        out.append({"name": str(under.with_suffix("")), "digest": hashlib.sha256(digests[str(path)].encode()).hexdigest()[:16],
                    "path": str(path.resolve()), "context": "input"})
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
    start_logger(spool_root() / rid)
    return rid


def start_logger(spool: Path) -> None:
    """Log the records earlier invocations left behind, then log this one's jobs from a background thread."""
    global _LOGGER
    if _LOGGER is not None:  # an earlier invocation in this process that never reached its finish hook
        stop_logger()
    ingest.drain_leftovers(spool_root(), spool)
    _LOGGER = ingest.SpoolLogger(spool).start()
    os.environ[ENV_SPOOL] = str(spool)


def stop_logger() -> None:
    """Log every record still in the spool (an unfinished one as a FAILED run) and stop the thread."""
    global _LOGGER
    logger, _LOGGER = _LOGGER, None
    os.environ.pop(ENV_SPOOL, None)
    if logger is not None:
        logger.stop()


def finish_parent(status: str = "FINISHED") -> None:
    """Log what the jobs left in the spool, then close the parent; an invocation that ran no job leaves no run."""
    stop_logger()
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


def _limit_threads(threads: int) -> None:
    """Give torch the rule's threads without importing it: a job that never uses torch should not pay ~1.5 s.
    torch reads OMP_NUM_THREADS when it is first imported; one imported already is set directly."""
    n = str(max(1, int(threads)))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(n))
    else:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = n


def _open_job_record(smk, log_path: str | None) -> Path:
    """The job's record in the invocation's spool (or, outside one, the direct spool): tags, job key, name."""
    rule, wildcards, params = smk.rule, _named(smk.wildcards), _named(smk.params)
    digests = input_digest(list(smk.input))
    key = job_key(rule, wildcards, params, digests)
    tags = {"snakemake.rule": rule, "job_key": key, "git_sha": git_sha(), "host": socket.gethostname(),
            **{f"wc.{k}": str(v) for k, v in wildcards.items()}}
    if os.environ.get("SLURM_JOB_ID"):
        tags["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    if os.environ.get(ENV_PARENT):
        tags["mlflow.parentRunId"] = os.environ[ENV_PARENT]
    wc_text = ",".join(f"{k}={v}" for k, v in wildcards.items())
    spool = Path(os.environ[ENV_SPOOL]) if os.environ.get(ENV_SPOOL) else spool_root() / "direct"
    record = open_record(spool, {"rule": rule, "wildcards": {k: str(v) for k, v in wildcards.items()}, "tags": tags,
                                 "run_name": f"{rule}[{wc_text}]" if wc_text else rule,
                                 "log": os.path.abspath(log_path) if log_path else None})
    JobRun(record).log_dataset_files(dataset_inputs(list(smk.input), digests))
    return record


def _close_job_record(run: JobRun, status: str, log_path: str | None) -> None:
    """Stage the finished log, publish end.json, and log the record now unless the invocation's logger will."""
    if log_path and Path(log_path).is_file():
        run.log_artifact(log_path, "logs")
    if not close_record(run.record, status):
        print(f"lmcal tracking: {run.record} was closed by the invocation (as crashed) before the job ended",
              file=sys.stderr)
        return
    if _LOGGER is not None and run.record.parent == _LOGGER.spool:
        _LOGGER.ingest(run.record)  # the logger lives in this process: no need to wait for its next poll
    elif not os.environ.get(ENV_SPOOL):
        try:  # no invocation is listening: log it ourselves (this imports MLflow)
            ingest.ingest_record(client(), ensure_experiment(), run.record)
        except Exception as exc:
            print(f"lmcal tracking: could not log {run.record} ({type(exc).__name__}: {exc}); it is kept for "
                  "the next invocation", file=sys.stderr)


@contextlib.contextmanager
def job_run(smk, *, log_outputs: bool = True) -> Iterator[JobRun]:
    """Child MLflow run for one Snakemake job (see module docstring): stdout/stderr go to the rule's log, the
    outputs and the log become artifacts, and an exception makes the run FAILED (and is re-raised)."""
    log_path = smk.log[0] if len(smk.log) else None
    run, status = None, "FAILED"
    try:
        with _redirect_to(log_path):
            _limit_threads(smk.threads)
            if not enabled():
                yield JobRun(None)
                return
            run = JobRun(_open_job_record(smk, log_path))
            run.log_params(_named(smk.params))
            try:
                yield run
                status = "FINISHED"
            except BaseException:
                traceback.print_exc()  # into the rule's log, before the redirect ends
                raise
            finally:
                if log_outputs and status == "FINISHED":
                    for path, art_dir in _output_files(list(smk.output)):
                        run.log_artifact(path, art_dir, link=True)
    finally:
        if run is not None:
            _close_job_record(run, status, log_path)
