"""The result of a scaling-law fit: parameters, bootstrap draws, predictions and intervals."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lmcal.scaling.bootstrap import percentile_interval
from lmcal.scaling.loglog import positive_array
from lmcal.scaling.objective import CHINCHILLA, POWER_LAW, Form, log_predict
from lmcal.scaling.settings import FitSettings


@dataclass
class FitResult:
    """A fitted scaling law. ``params`` and ``draws`` are linear (E, A[, B] in loss units; α, β unitless)."""

    form: str
    params: dict[str, float]
    theta: np.ndarray  # log-space (e, a[, b], α[, β])
    objective: float  # summed log-space loss at the optimum
    converged: bool
    n_points: int
    settings: FitSettings
    residuals: np.ndarray  # ln L̂ − ln L at the fitted points
    diagnostics: dict = field(default_factory=dict)
    theta_draws: np.ndarray | None = None  # (n_boot, n_params) bootstrap refits in log space

    @property
    def _form(self) -> Form:
        return POWER_LAW if self.form == POWER_LAW.name else CHINCHILLA

    @property
    def param_names(self) -> tuple[str, ...]:
        return self._form.param_names

    @property
    def draws(self) -> np.ndarray | None:
        """Bootstrap draws of the linear parameters, (n_boot, n_params), columns ``param_names``."""
        if self.theta_draws is None:
            return None
        out = self.theta_draws.copy()
        for j, t in enumerate(self._form.theta_names):
            if t in ("e", "a", "b"):
                out[:, j] = np.exp(out[:, j])
        return out

    def draws_frame(self) -> pd.DataFrame:
        """Bootstrap draws as a DataFrame (one column per parameter): the corner plot's input."""
        if self.draws is None:
            raise ValueError("this fit has no bootstrap draws (settings.n_boot = 0)")
        return pd.DataFrame(self.draws, columns=list(self.param_names))

    @property
    def ci(self) -> dict[str, tuple[float, float]]:
        """Percentile-bootstrap interval of every parameter at level ``settings.ci`` (empty without draws)."""
        if self.theta_draws is None:
            return {}
        lo, hi = percentile_interval(self.draws, self.settings.ci)
        return {p: (float(a), float(b)) for p, a, b in zip(self.param_names, lo, hi)}

    def _logs(self, n, d):
        log_n = np.log(positive_array(np.atleast_1d(n), "n"))
        log_d = None if d is None else np.log(positive_array(np.atleast_1d(d), "d"))
        if self._form is CHINCHILLA and log_d is None:
            raise ValueError("d (training tokens) is required to predict from a Chinchilla fit")
        return log_n, log_d

    def predict(self, n, d=None) -> np.ndarray:
        """Predicted loss (same units as the fitted loss) at sizes ``n`` (and tokens ``d``)."""
        return np.exp(log_predict(self._form, self.theta, *self._logs(n, d)))

    def predict_draws(self, n, d=None) -> np.ndarray:
        """Bootstrap curves, shape (n_boot, len(n)); NaN rows for resamples that could not be refitted."""
        if self.theta_draws is None:
            raise ValueError("this fit has no bootstrap draws (settings.n_boot = 0)")
        return np.exp(log_predict(self._form, self.theta_draws, *self._logs(n, d)))

    def confidence_band(self, n, d=None, ci: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Percentile band of the fitted curve (parameter uncertainty only)."""
        return percentile_interval(self.predict_draws(n, d), ci or self.settings.ci)

    def prediction_interval(self, n, d=None, ci: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Interval for a NEW observation: bootstrap curves plus resampled log-residual noise.

        With ``settings.pi_noise == "residual"`` each bootstrap curve is multiplied by exp(−r*), r* drawn from
        the full-data log-residuals inflated by sqrt(n / (n − p)) (they underestimate the noise, since the fit
        chased them); with ≤ p points there is no residual information and the band is the curve band alone.
        """
        logs = np.log(self.predict_draws(n, d))
        p = self._form.n_params
        if self.settings.pi_noise == "residual" and self.n_points > p:
            rng = np.random.default_rng(self.settings.seed + 1)
            scaled = self.residuals * np.sqrt(self.n_points / (self.n_points - p))
            logs = logs - rng.choice(scaled, size=logs.shape)
        lo, hi = percentile_interval(logs, ci or self.settings.ci)
        return np.exp(lo), np.exp(hi)

    def as_dict(self) -> dict:
        """JSON-friendly summary: parameters, intervals, objective, convergence, diagnostics, every setting."""
        return {
            "form": self.form,
            "params": dict(self.params),
            "ci": {k: list(v) for k, v in self.ci.items()},
            "objective": self.objective,
            "converged": self.converged,
            "n_points": self.n_points,
            "diagnostics": dict(self.diagnostics),
            "settings": self.settings.as_params(prefix=""),
        }

    def as_metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat numeric dict for ``log_metrics``: params, their CI bounds, objective, convergence."""
        out = {f"{prefix}{k}": v for k, v in self.params.items()}
        for k, (lo, hi) in self.ci.items():
            out[f"{prefix}{k}_lo"], out[f"{prefix}{k}_hi"] = lo, hi
        out[f"{prefix}objective"] = self.objective
        out[f"{prefix}converged"] = float(self.converged)
        return out
