"""Adapter: load, select and record the documents of one dataset."""

from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.data import documents as data

with job_run(snakemake) as run:
    docs, manifest = data.prepare_documents(snakemake.params.spec, snakemake.wildcards.dataset)
    io.write_parquet(docs, snakemake.output.documents)
    io.write_json(manifest, snakemake.output.manifest)
    run.log_dataset(docs[["doc_id", "n_chars", "source"]], snakemake.wildcards.dataset, "source", manifest["version"])
    run.log_params({"version": manifest["version"], "checksum_sha256": manifest["checksum_sha256"]})
    run.log_metrics({"n_documents": manifest["n_documents"], "n_chars": manifest["n_chars"]})
