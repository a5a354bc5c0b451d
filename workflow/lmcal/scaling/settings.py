"""Every choice a scaling-law fit makes, in one dataclass that is logged whole (the "(Mis)fitting" checklist)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

LOSSES = ("huber", "squared")
METHODS = ("lbfgs_grid", "varpro")
OPTIMIZERS = ("L-BFGS-B", "BFGS", "Nelder-Mead")

# Chinchilla Approach 3 start grid (Hoffmann et al. 2022 App. D.2; Epoch's data_analysis.ipynb).
GRID_EXPONENT = (0.0, 0.5, 1.0, 1.5, 2.0)
GRID_LOG_E = (-1.0, -0.5, 0.0, 0.5, 1.0)
GRID_LOG_COEF = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)


def _grid(start: float, stop: float, step: float) -> tuple[float, ...]:
    return tuple(float(v) for v in [start + i * step for i in range(round((stop - start) / step) + 1)])


@dataclass(frozen=True)
class FitSettings:
    """Settings of a fit of L = E + A·N^-α (+ B·D^-β) in log space.

    The objective is the SUM over points of ρ(log L̂ − log L) with natural logs; ``loss="huber"`` uses
    ρ = Huber_δ (0.5·r² for |r| ≤ δ, else δ·(|r| − δ/2)), ``loss="squared"`` uses ρ = 0.5·r². The sum (not
    the mean) matters: L-BFGS's stopping rules are absolute for objectives below 1, so a mean stops early.
    """

    loss: str = "huber"
    delta: float = 1e-3  # Huber threshold on log-residuals (≈ relative error of L)
    method: str = "lbfgs_grid"  # "lbfgs_grid": multi-start on the full problem; "varpro": see varpro.py
    optimizer: str = "L-BFGS-B"
    # Start grid, one axis per log-space parameter: E = exp(e), A = exp(a), B = exp(b).
    grid_alpha: tuple[float, ...] = GRID_EXPONENT
    grid_beta: tuple[float, ...] = GRID_EXPONENT
    grid_e: tuple[float, ...] = GRID_LOG_E
    grid_a: tuple[float, ...] = GRID_LOG_COEF
    grid_b: tuple[float, ...] = GRID_LOG_COEF
    n_starts: int | None = None  # None: the whole grid; k: the k grid points with the lowest start objective
    n_polish: int = 5  # best grid results re-run by scipy's L-BFGS-B (exact bound handling, its own stop rules)
    exponent_bounds: tuple[float, float | None] = (0.0, None)  # α, β bounds (L-BFGS-B only)
    maxiter: int = 5000
    # Stopping: relative objective decrease (vectorised L-BFGS); scipy's L-BFGS-B reads ftol as an ABSOLUTE
    # decrease when the objective is < 1, which a tiny value also keeps from stopping early.
    ftol: float = 1e-13
    gtol: float = 1e-12  # max-norm of the projected gradient
    # Variable projection: exponent search grid, IRLS rounds of the inner NNLS, then a full polish.
    varpro_grid_max: float = 3.0
    varpro_grid_step: float = 0.1
    varpro_irls_iters: int = 5
    # Uncertainty.
    n_boot: int = 1000
    ci: float = 0.95
    seed: int = 0
    boot_starts: int = 5  # grid starts per bootstrap refit, besides the full-data optimum (see fit.py)
    resample_within_groups: bool = True
    pi_noise: str = "residual"  # prediction intervals add resampled log-residuals ("none": curve only)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not (self.delta > 0 and math.isfinite(self.delta)):
            raise ValueError(f"delta must be a positive finite number, got {self.delta!r}")
        if not 0.0 < self.ci < 1.0:
            raise ValueError(f"ci must lie strictly between 0 and 1, got {self.ci!r}")
        if self.n_boot < 0:
            raise ValueError(f"n_boot must be >= 0, got {self.n_boot!r}")
        if self.n_starts is not None and self.n_starts < 1:
            raise ValueError(f"n_starts must be None or >= 1, got {self.n_starts!r}")
        if self.n_polish < 1:
            raise ValueError(f"n_polish must be >= 1, got {self.n_polish!r}")
        if self.boot_starts < 0:
            raise ValueError(f"boot_starts must be >= 0, got {self.boot_starts!r}")
        if self.varpro_grid_step <= 0 or self.varpro_grid_max <= 0:
            raise ValueError("varpro_grid_step and varpro_grid_max must be positive")
        if self.pi_noise not in ("residual", "none"):
            raise ValueError(f"pi_noise must be 'residual' or 'none', got {self.pi_noise!r}")
        bounds = tuple(self.exponent_bounds)
        if len(bounds) != 2 or (None not in bounds and bounds[0] >= bounds[1]):
            raise ValueError(f"exponent_bounds must be (lower, upper) with lower < upper, got {self.exponent_bounds!r}")
        object.__setattr__(self, "exponent_bounds", bounds)
        for name in ("grid_alpha", "grid_beta", "grid_e", "grid_a", "grid_b"):
            values = tuple(float(v) for v in getattr(self, name))
            if not values:
                raise ValueError(f"{name} must hold at least one start value")
            object.__setattr__(self, name, values)  # lists from YAML become hashable tuples

    @classmethod
    def from_dict(cls, cfg: dict | None) -> FitSettings:
        """Build from a config mapping; unknown keys raise ValueError naming them."""
        cfg = dict(cfg or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"unknown FitSettings keys: {unknown}")
        return cls(**cfg)

    def varpro_grid(self) -> tuple[float, ...]:
        return _grid(0.0, self.varpro_grid_max, self.varpro_grid_step)

    def replace(self, **changes) -> FitSettings:
        return dataclasses.replace(self, **changes)

    def as_params(self, prefix: str = "fit.") -> dict[str, str | float | int | bool]:
        """Flat dict for ``mlflow.log_params``: every field, grids as comma-joined strings, plus the objective."""
        out: dict[str, str | float | int | bool] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = ",".join("None" if v is None else f"{v:g}" for v in value)
            elif value is None:
                value = "None"
            out[prefix + f.name] = value
        out[prefix + "objective"] = f"sum of {'Huber_delta' if self.loss == 'huber' else '0.5*r^2'}(ln Lhat - ln L)"
        out[prefix + "space"] = "log (natural), parameters E=exp(e), A=exp(a), B=exp(b)"
        return out
