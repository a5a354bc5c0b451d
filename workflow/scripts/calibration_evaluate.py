"""Adapter: one model's choice probabilities on one evaluation set, its calibration metrics and diagram."""

import re
import time
from pathlib import Path

from lmcal.calibration import mcq
from lmcal.calibration.figures import reliability_diagram
from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.models import store as models

p = snakemake.params
with job_run(snakemake) as run:
    model, tokenizer = models.load_model(Path(snakemake.input.info).parent)
    items = io.read_parquet(snakemake.input.evalset)
    start = time.perf_counter()
    # A set may name its own template and scoring method (e.g. the same items scored by option and by letter).
    settings = {**p.settings, "template": p.evalset_spec.get("template") or p.settings["template"],
                "method": p.evalset_spec.get("method") or p.settings["method"]}
    scored, metrics, table = mcq.evaluate_calibration(model, tokenizer, items, **settings)
    metrics.update(model=snakemake.wildcards.model, evalset=snakemake.wildcards.evalset,
                   seconds=time.perf_counter() - start)
    title = f"{snakemake.wildcards.model} on {snakemake.wildcards.evalset}"
    fig = reliability_diagram(table, title=title, metrics=metrics)
    io.write_parquet(scored, snakemake.output.scored)
    io.write_json(metrics, snakemake.output.metrics)
    io.save_figure(fig, snakemake.output.figure)
    run.log_metrics({k: v for k, v in metrics.items() if k != "accuracy_by_category"})
    by_category = metrics.get("accuracy_by_category", {})
    run.log_metrics({"accuracy." + re.sub(r"[^\w\-. :/]", "_", k): v for k, v in by_category.items()})
    run.log_table(table, "reliability/table.parquet")
