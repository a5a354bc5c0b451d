"""Planted scaling laws with seeded noise, shared by the lmcal.scaling tests."""

import numpy as np

TRUE_PL = {"E": 1.8, "A": 400.0, "alpha": 0.34}
# Epoch's refit of Chinchilla (Besiroglu et al. 2024), used only as a realistic planted law.
TRUE_CH = {"E": 1.82, "A": 482.0, "B": 2085.0, "alpha": 0.35, "beta": 0.37}
# A reduced start grid for the bootstrap-heavy tests (the default grid is exercised once per form below).
SMALL_GRID = {"grid_alpha": (0.0, 1.0), "grid_beta": (0.0, 1.0), "grid_e": (0.0,), "grid_a": (0.0, 10.0),
              "grid_b": (0.0, 10.0)}


def power_law(n, E, A, alpha):
    return E + A * np.asarray(n, float) ** -alpha


def chinchilla(n, d, E, A, B, alpha, beta):
    return E + A * np.asarray(n, float) ** -alpha + B * np.asarray(d, float) ** -beta


def planted_power_law(seed: int, sigma: float = 0.01, reps: int = 2):
    """12 sizes over 4 decades, ``reps`` points per size, multiplicative log-normal noise of SD ``sigma``."""
    rng = np.random.default_rng(seed)
    n = np.repeat(np.geomspace(1e5, 1e9, 12), reps)
    return n, power_law(n, **TRUE_PL) * np.exp(rng.normal(0.0, sigma, n.size))


def planted_chinchilla(seed: int, sigma: float = 0.005):
    rng = np.random.default_rng(seed)
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e10, 6), np.geomspace(1e9, 1e12, 5)))
    return n, d, chinchilla(n, d, **TRUE_CH) * np.exp(rng.normal(0.0, sigma, n.size))
