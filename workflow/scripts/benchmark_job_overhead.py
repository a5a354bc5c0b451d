"""Per-job start-up cost of a trivial tracked job, for one or more library trees.

    python workflow/scripts/benchmark_job_overhead.py --n 7 --tree /tmp/before/workflow --tree workflow

For each tree (a directory holding ``lmcal/``, put first on PYTHONPATH so it overrides the editable install)
it builds a throwaway workflow in a temp dir with the real invocation pattern (parent run in ``onstart``,
closed in ``onsuccess``/``onerror``) and one trivial rule whose script does
``with job_run(snakemake) as run: run.log_metrics({"x": 1.0})`` and writes a tiny JSON. It runs the workflow
``--n`` times with ``--forceall`` (fresh outputs each time, so every invocation reruns the same job and the
rerun-replaces-run path is exercised) and reports, per tree:

- job wall: Snakemake's ``benchmark:`` seconds for the job (script process start to exit), the headline number;
- invocation wall: the whole ``snakemake`` command (parse, onstart, job, onsuccess): work moved out of the job
  into the main process (the MLflow logger) shows up here.

It checks that the job imported lmcal from the tree given (``lmcal.__file__`` recorded in the job's output) and
that MLflow holds one parent and one FINISHED child per job after the last invocation. ``--server`` runs the same
against a local ``mlflow server`` on 127.0.0.1 instead of the sqlite file; ``--floor`` also times a script
that skips ``job_run`` (what Snakemake itself costs per job).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SNAKEFILE = '''
try:
    from lmcal.core import tracking
except ImportError:  # the tree before the regrouping
    from lmcal import tracking


onstart:
    tracking.start_parent(config)


onsuccess:
    tracking.finish_parent("FINISHED")


onerror:
    tracking.finish_parent("FAILED")


rule all:
    input:
        expand("out/{i}.json", i=range(int(config.get("jobs", 1)))),


rule trivial:
    output:
        "out/{i}.json",
    log:
        "logs/{i}.log",
    benchmark:
        "bench/{i}.tsv"
    params:
        seed=0,
    threads: 1
    script:
        "trivial.py"
'''

SCRIPT = '''
import json

try:
    from lmcal.core.tracking import job_run
except ImportError:  # the tree before the regrouping
    from lmcal.tracking import job_run
import lmcal

with job_run(snakemake) as run:
    print("lmcal imported from", lmcal.__file__)
    run.log_metrics({"x": 1.0})
    with open(snakemake.output[0], "w") as f:
        json.dump({"x": 1.0, "lmcal_file": lmcal.__file__}, f)
'''


FLOOR_SCRIPT = '''
import json

import lmcal

with open(snakemake.output[0], "w") as f:  # no tracking: what Snakemake itself costs per script job
    json.dump({"x": 1.0, "lmcal_file": lmcal.__file__}, f)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(workdir: Path) -> tuple[subprocess.Popen, str]:
    """A local MLflow tracking server (sqlite backend, proxied artifacts); waits until it answers."""
    port = free_port()
    with open(workdir / "server.log", "w") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{workdir / 'server.db'}",
             "--artifacts-destination", str(workdir / "server-artifacts")],
            stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, uri
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited; see {workdir / 'server.log'}")
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("mlflow server did not start within 120 s")


def snakemake(workdir: Path, env: dict, jobs: int) -> float:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(workdir / "Snakefile"), "--directory", str(workdir),
           "--cores", "1", "--forceall", "--config", f"jobs={jobs}"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"snakemake failed in {workdir}:\n{(res.stdout + res.stderr)[-4000:]}")
    return wall


def check_runs(uri: str, n_jobs: int) -> None:
    """One live parent per invocation so far, one FINISHED child per job: reruns replaced, never duplicated."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(os.environ.get("LMCAL_EXPERIMENT", "lmcal"))
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    children = [r for r in runs if "snakemake.rule" in r.data.tags]
    parents = {r.info.run_id for r in runs if r.data.tags.get("lmcal.kind") == "invocation"}
    if len(children) != n_jobs or any(r.info.status != "FINISHED" for r in children):
        raise AssertionError(f"expected {n_jobs} FINISHED children, got {[(r.info.status) for r in children]}")
    if not {r.data.tags["mlflow.parentRunId"] for r in children} <= parents:
        raise AssertionError("a child points at a parent that is not an invocation run")
    for r in children:
        i = r.data.tags["wc.i"]
        arts = {a.path for d in ("outputs", "logs") for a in c.list_artifacts(r.info.run_id, d)}
        if r.data.metrics != {"x": 1.0} or arts != {f"outputs/{i}.json", f"logs/{i}.log"}:
            raise AssertionError(f"child {i}: metrics {r.data.metrics}, artifacts {sorted(arts)}")


def bench_tree(tree: Path, n: int, jobs: int, uri: str | None, keep: bool, floor: bool = False) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="lmcal-jobbench-"))
    (workdir / "Snakefile").write_text(SNAKEFILE)
    (workdir / "trivial.py").write_text(FLOOR_SCRIPT if floor else SCRIPT)
    server = None
    if uri == "server":
        server, uri = start_server(workdir)
    uri = uri or f"sqlite:///{workdir / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]).rstrip(":"),
           "MLFLOW_TRACKING_URI": uri, "LMCAL_ROOT": str(workdir), "CUDA_VISIBLE_DEVICES": ""}
    env.pop("LMCAL_PARENT_RUN_ID", None)
    try:
        snakemake(workdir, env, jobs)  # warm-up: creates the store and the experiment, fills OS caches
        job_walls, inv_walls = [], []
        for _ in range(n):
            inv_walls.append(snakemake(workdir, env, jobs))
            if not floor:
                check_runs(uri, jobs)
            for i in range(jobs):
                with open(workdir / "bench" / f"{i}.tsv") as f:
                    job_walls.append(float(next(csv.DictReader(f, delimiter="\t"))["s"]))
        lmcal_file = json.loads((workdir / "out" / "0.json").read_text())["lmcal_file"]
        if not Path(lmcal_file).resolve().is_relative_to(tree.resolve()):
            raise AssertionError(f"job imported lmcal from {lmcal_file}, not from {tree}: PYTHONPATH did not win")
        return {"tree": f"{tree} (floor: no job_run)" if floor else str(tree), "lmcal_file": lmcal_file, "job_wall_s": statistics.median(job_walls),
                "invocation_wall_s": statistics.median(inv_walls),
                "n": len(job_walls), "uri": uri.split(":")[0]}
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", action="append", type=Path,
                    help="directory holding lmcal/ (repeat to compare; default: this checkout's workflow/)")
    ap.add_argument("--n", type=int, default=5, help="timed invocations per tree (after one warm-up)")
    ap.add_argument("--jobs", type=int, default=1, help="trivial jobs per invocation")
    ap.add_argument("--server", action="store_true", help="track to a local mlflow server instead of sqlite")
    ap.add_argument("--keep", action="store_true", help="keep the temp workdirs")
    ap.add_argument("--floor", action="store_true",
                    help="also time a script without job_run (Snakemake's own per-job cost), with the last tree")
    args = ap.parse_args(argv)
    if args.n < 1 or args.jobs < 1:
        ap.error("--n and --jobs must be >= 1")
    trees = [t.resolve() for t in args.tree or [Path(__file__).resolve().parents[1]]]
    for t in trees:
        if not (t / "lmcal" / "__init__.py").is_file():
            ap.error(f"--tree {t} holds no lmcal/ package")
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores", flush=True)
    results = []
    for t in trees:
        r = bench_tree(t, args.n, args.jobs, "server" if args.server else None, args.keep)
        results.append(r)
        print(f"{r['tree']}: median job wall {r['job_wall_s']:.2f} s, invocation {r['invocation_wall_s']:.2f} s, "
              f"over {r['n']} jobs ({r['uri']}); lmcal from {r['lmcal_file']}",
              flush=True)
    if args.floor:
        r = bench_tree(trees[-1], args.n, args.jobs, "server" if args.server else None, args.keep, floor=True)
        print(f"{r['tree']}: median job wall {r['job_wall_s']:.2f} s, invocation {r['invocation_wall_s']:.2f} s",
              flush=True)
        results.append(r)
    if len(trees) > 1:
        base = results[0]
        for r in results[1:len(trees)]:
            print(f"ratio {base['tree']} / {r['tree']}: job wall {base['job_wall_s'] / r['job_wall_s']:.2f}x, "
                  f"invocation {base['invocation_wall_s'] / r['invocation_wall_s']:.2f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
