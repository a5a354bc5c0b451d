"""The entropy study's headline claims with intervals and verdict rules (``lmcal.core.claims``).

EntCE per corpus (largest model of each family at the reference decode) with its document-bootstrap CI, the
size-fit slope of ln EntCE vs ln N with its CI, and the slope against the Zipf prediction 1/α − 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lmcal.core.claims import claim


def entropy_claims(table: pd.DataFrame, fits: pd.DataFrame, exponents: pd.DataFrame, *, reference_decode: str,
                   ci: float = 0.95) -> list[dict[str, Any]]:
    """EntCE of each family's largest model per corpus, the size slopes and their match to 1/α − 1."""
    out = []
    ref = table[table["decode"] == reference_decode]
    size = "n_params_non_embedding" if "n_params_non_embedding" in ref else "n_params"
    for (family, dataset), g in ref.groupby(["family", "dataset"], sort=True):
        r = g.sort_values(size).iloc[-1]
        lo, hi = r.get("entce_lo", np.nan), r.get("entce_hi", np.nan)
        out.append(claim(
            f"entropy.entce.{r['model']}.{dataset}",
            f"{r['model']} on {dataset} (decode {reference_decode}): its samples are more uncertain than its log "
            "loss on the human text (EntCE > 0)", r["entce"], ci=[lo, hi],
            interval=f"{ci:.0%} bootstrap over documents",
            rule="EntCE = mean entropy of own samples - mean log loss on the human continuation (nats/token); "
                 "EntCE > 0 if the CI's lower bound is > 0",
            verdict=bool(lo > 0) if np.isfinite(lo) else None))
    for f in fits[fits["status"] == "ok"].itertuples() if len(fits) else []:
        out.append(claim(
            f"entropy.size_slope.{f.family}.{f.dataset}", f"{f.family} on {f.dataset}: EntCE falls with model size",
            f.slope, ci=[f.slope_lo, f.slope_hi], interval=f"{ci:.0%} bootstrap over documents (refit per draw)",
            rule="log-log OLS ln EntCE = a + slope*ln N; falls with size if the CI's upper bound is < 0",
            verdict=bool(f.slope_hi < 0) if np.isfinite(f.slope_hi) else None))
    for e in exponents.itertuples() if len(exponents) else []:
        if not np.isfinite(getattr(e, "measured", np.nan)):
            continue
        overlap = e.measured_lo <= e.predicted_hi and e.predicted_lo <= e.measured_hi
        out.append(claim(
            f"entropy.zipf_exponent.{e.family}.{e.dataset}",
            f"{e.family} on {e.dataset}: the size slope matches the Zipf prediction 1/alpha - 1 = "
            f"{e.predicted:.3g} [{e.predicted_lo:.3g}, {e.predicted_hi:.3g}] (alpha = {e.alpha:.3g})",
            e.measured, ci=[e.measured_lo, e.measured_hi], interval=f"{ci:.0%} bootstrap over documents",
            rule="matches if the slope's CI overlaps the interval of 1/alpha - 1 from the Zipf alpha's CI",
            verdict=bool(overlap) if np.isfinite(e.measured_lo) else None))
    return out
