"""Scaling-law fitting: log-log OLS, E + A·N^-α and Chinchilla fits, bootstrap intervals and backtests.

Method choices follow the spec "emergence and scaling-law fits" §3: log-space SUMMED Huber loss (δ = 1e-3),
multi-start L-BFGS over the Chinchilla start grid or variable projection, percentile-bootstrap intervals,
and every choice in ``FitSettings.as_params()`` for MLflow.
"""

from lmcal.scaling.backtest import backtest, summarise_backtest
from lmcal.scaling.bootstrap import percentile_interval, resample_indices
from lmcal.scaling.fit import fit_chinchilla, fit_power_law, grid_starts
from lmcal.scaling.loglog import fit_loglog
from lmcal.scaling.objective import huber, log_huber_objective
from lmcal.scaling.result import FitResult
from lmcal.scaling.sensitivity import sensitivity_table
from lmcal.scaling.settings import FitSettings

__all__ = [
    "FitResult", "FitSettings", "backtest", "fit_chinchilla", "fit_loglog", "fit_power_law", "grid_starts",
    "huber", "log_huber_objective", "percentile_interval", "resample_indices", "sensitivity_table",
    "summarise_backtest",
]
