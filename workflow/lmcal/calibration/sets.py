"""Score one loaded model on several evaluation sets and write each set's items, metrics and reliability diagram.

What ``evaluate_calibration`` does for a cached or ladder model and what ``sft_train`` does right after fine-tuning
(so a fine-tuned model is not reloaded in a job of its own). Each set's metrics go to the job's MLflow run as
``{evalset}.{metric}``; the reliability table as ``reliability/{evalset}.parquet``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from lmcal.calibration import mcq
from lmcal.calibration.figures import reliability_diagram
from lmcal.core import io


def evaluate_sets(model, tokenizer, name: str, evalsets: Sequence[str], item_paths: Sequence[str],
                  settings: dict[str, dict], outputs: dict[str, Sequence[str]], run: Any | None = None
                  ) -> dict[str, dict]:
    """Score ``model`` (called ``name``) on every set; ``outputs`` holds ``scored``, ``metrics`` and ``figures``
    paths in ``evalsets`` order. Returns set name → metrics."""
    lengths = {len(item_paths), *(len(outputs[k]) for k in ("scored", "metrics", "figures"))}
    if lengths != {len(evalsets)}:
        raise ValueError(f"evaluate_sets: {len(evalsets)} sets but inputs/outputs of lengths {sorted(lengths)}")
    out: dict[str, dict] = {}
    for i, evalset in enumerate(evalsets):
        items = io.read_parquet(item_paths[i])
        start = time.perf_counter()
        scored, metrics, table = mcq.evaluate_calibration(model, tokenizer, items, **settings[evalset])
        metrics.update(model=name, evalset=evalset, seconds=time.perf_counter() - start)
        fig = reliability_diagram(table, title=f"{name} on {evalset}", metrics=metrics)
        io.write_parquet(scored, outputs["scored"][i])
        io.write_json(metrics, outputs["metrics"][i])
        io.save_figure(fig, outputs["figures"][i])
        if run is not None:
            run.log_metrics({f"{evalset}.{k}": v for k, v in metrics.items() if k != "accuracy_by_category"})
            by_category = metrics.get("accuracy_by_category", {})
            run.log_metrics({f"{evalset}.accuracy." + re.sub(r"[^\w\-. :/]", "_", k): v
                             for k, v in by_category.items()})
            run.log_table(table, f"reliability/{evalset}.parquet")
        out[evalset] = metrics
    return out
