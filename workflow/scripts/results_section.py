"""Adapter: README results section (markdown) and its claim snapshots from the study summaries."""

from pathlib import Path

from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.report.machine import describe, machine_info
from lmcal.report.results import render_section, snapshot

with job_run(snakemake) as run:
    machine = machine_info()
    snaps = {study: snapshot(study, io.read_json(path), machine, path)
             for study, path in zip(snakemake.params.studies, snakemake.input.summaries)}
    with io.atomic_dir(snakemake.output.snapshots) as tmp:
        for study, snap in snaps.items():
            io.write_json(snap, Path(tmp) / f"{study}.json")
    with io.atomic_path(snakemake.output.section) as tmp:
        tmp.write_text(render_section(snaps, describe))
    run.log_metrics({f"claims.{s}": len(v["claims"]) for s, v in snaps.items()})
