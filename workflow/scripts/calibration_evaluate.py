"""Adapter: one model's choice probabilities on every evaluation set, its calibration metrics and diagrams.

One MLflow child run per model; each set's metrics are logged under ``{evalset}.`` (e.g. ``facts.ece``).
"""

import re
import time
from pathlib import Path

from lmcal.calibration import mcq
from lmcal.calibration.figures import reliability_diagram
from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.models import store as models

p = snakemake.params
out = snakemake.output
name = snakemake.wildcards.model
with job_run(snakemake) as run:
    model, tokenizer = models.load_model(Path(snakemake.input.info).parent)
    for i, evalset in enumerate(p.evalsets):
        items = io.read_parquet(snakemake.input.evalsets[i])
        start = time.perf_counter()
        scored, metrics, table = mcq.evaluate_calibration(model, tokenizer, items, **p.settings[evalset])
        metrics.update(model=name, evalset=evalset, seconds=time.perf_counter() - start)
        fig = reliability_diagram(table, title=f"{name} on {evalset}", metrics=metrics)
        io.write_parquet(scored, out.scored[i])
        io.write_json(metrics, out.metrics[i])
        io.save_figure(fig, out.figures[i])
        run.log_metrics({f"{evalset}.{k}": v for k, v in metrics.items() if k != "accuracy_by_category"})
        by_category = metrics.get("accuracy_by_category", {})
        run.log_metrics({f"{evalset}.accuracy." + re.sub(r"[^\w\-. :/]", "_", k): v
                         for k, v in by_category.items()})
        run.log_table(table, f"reliability/{evalset}.parquet")
