"""Sensitivity of a fit to its choices (δ, loss, optimizer, method, start grid): the F8 table."""

from __future__ import annotations

import pandas as pd

from lmcal.scaling.fit import fit_chinchilla, fit_power_law
from lmcal.scaling.settings import FitSettings

DEFAULT_VARIATIONS: dict[str, list] = {
    "delta": [1e-4, 1e-3, 1e-2, 1e-1],
    "loss": ["huber", "squared"],
    "optimizer": ["L-BFGS-B", "BFGS", "Nelder-Mead"],
    "method": ["lbfgs_grid", "varpro"],
    "n_starts": [1, 10, None],
}


def sensitivity_table(
    n, loss, *, d=None, settings: FitSettings | None = None, variations: dict[str, list] | None = None
) -> pd.DataFrame:
    """Refit with one setting changed at a time (no bootstrap); one row per (setting, value).

    Columns: setting, value, is_base (the value equals the base settings'), the fitted parameters,
    objective (in that row's own loss, so compare parameters, not objectives, across losses) and converged.
    """
    base = (settings or FitSettings()).replace(n_boot=0)
    variations = DEFAULT_VARIATIONS if variations is None else variations
    rows = []
    for field, values in variations.items():
        for value in values:
            s = base.replace(**{field: value})
            fit = (fit_power_law(n, loss, s, progress=False) if d is None
                   else fit_chinchilla(n, d, loss, s, progress=False))
            rows.append({"setting": field, "value": str(value), "is_base": getattr(base, field) == value,
                         **fit.params, "objective": fit.objective, "converged": fit.converged})
    return pd.DataFrame(rows)
