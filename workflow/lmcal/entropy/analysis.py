"""Entropy calibration: step curves, scalar EntCE and its scaling with model size.

Spec: /work/shared/specs/entropy-calibration.md §1, §2 (aggregation), §4 (scaling fit). Inputs are the sampler's
and scorer's parquet files (one row per sample / per human document, list columns per step):

- samples: ``doc_id, sample_idx, gen_len, entropy`` (nats of the distribution each generated token came from);
- human: ``doc_id, n_tokens, logloss, logloss_finite, entropy`` (teacher-forced, same temperature).

EntCE = entropy − log loss (nats/token; the paper's sign: positive = the model's own generations are more
uncertain than it is on human text). All entropies and losses are natural-log nats per token.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import warnings
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from lmcal.core import io
from lmcal.scaling import fit_loglog

log = logging.getLogger(__name__)

#: Per-step series a curves table holds: (series name, source table, column).
SERIES = (("entropy", "samples", "entropy"), ("logloss", "human", "logloss"),
          ("logloss_finite", "human", "logloss_finite"), ("human_entropy", "human", "entropy"))
NEGATIVE_POLICIES = ("drop", "abs")
_TRUNCATIONS = ("top_k", "top_p", "min_p", "epsilon")


# ---------------------------------------------------------------- per-step aggregation (§2)

def _ragged(values: Sequence[Sequence[float]], max_len: int | None, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Flatten a ragged list of per-step arrays, cut at ``max_len``: (values, step index)."""
    if max_len is not None and max_len < 1:
        raise ValueError(f"max_len must be >= 1 (or None for no cut), got {max_len!r}")
    arrays = [np.asarray(v, dtype=np.float64)[:max_len] for v in values]
    flat = np.concatenate(arrays) if arrays else np.zeros(0)
    if np.isnan(flat).any():
        raise ValueError(f"{name} holds NaN values")
    steps = np.concatenate([np.arange(a.size) for a in arrays]) if arrays else np.zeros(0, np.int64)
    return flat, steps.astype(np.int64)


def alive_mean_curve(values: Sequence[Sequence[float]], max_len: int | None = None,
                     name: str = "values") -> pd.DataFrame:
    """Mean over the sequences still alive at each step (EOS ends a sequence, so later steps average fewer).

    Returns ``step`` (0-based), ``mean`` (same unit as the values; +inf if any alive value is +inf) and ``n_alive``.
    """
    flat, steps = _ragged(values, max_len, name)
    n_alive = np.bincount(steps)
    with np.errstate(invalid="ignore"):
        total = np.bincount(steps, weights=flat, minlength=n_alive.size)
    return pd.DataFrame({"step": np.arange(n_alive.size), "mean": total / np.maximum(n_alive, 1),
                         "n_alive": n_alive})


def token_weighted_mean(values: Sequence[Sequence[float]], max_len: int | None = None,
                        name: str = "values") -> tuple[float, int]:
    """(mean over every token of every sequence within the first ``max_len`` steps, number of tokens)."""
    flat, _ = _ragged(values, max_len, name)
    return (float(flat.mean()) if flat.size else float("nan")), int(flat.size)


def ema(values: np.ndarray, factor: float) -> np.ndarray:
    """Exponential moving average s_t = factor·x_t + (1 − factor)·s_{t−1}, s_0 = x_0 (factor 1 = no smoothing).

    One factor is used for every curve: the reference notebook used 0.2 for entropy but 0.1 for log loss (spec §7
    defect 7), which shifts the two curves differently.
    """
    if not 0 < factor <= 1:
        raise ValueError(f"smoothing factor must be in (0, 1], got {factor!r}")
    x = np.asarray(values, dtype=np.float64)
    out = np.empty_like(x)
    acc = x[0] if x.size else 0.0
    for i, xi in enumerate(x):
        acc = xi if i == 0 else factor * xi + (1 - factor) * acc
        out[i] = acc
    return out


def _check_columns(df: pd.DataFrame, cols: Iterable[str], name: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{name} table lacks columns {missing} (has {list(df.columns)})")


def _check_inputs(samples: pd.DataFrame, human: pd.DataFrame) -> None:
    _check_columns(samples, ("doc_id", "entropy"), "samples")
    _check_columns(human, ("doc_id", "logloss", "logloss_finite", "entropy"), "human")
    if "gen_len" in samples.columns:
        lengths = samples["entropy"].map(len).to_numpy()
        if not np.array_equal(lengths, samples["gen_len"].to_numpy()):
            raise ValueError("samples: gen_len disagrees with the length of the entropy lists")


def entropy_curves(samples: pd.DataFrame, human: pd.DataFrame, *, max_len: int | None = 1000,
                   smoothing: float = 1.0) -> pd.DataFrame:
    """Long table ``series, step, mean, n_alive, smoothed`` for the SERIES (sample entropy, human log loss, ...)."""
    _check_inputs(samples, human)
    tables = {"samples": samples, "human": human}
    parts = []
    for series, source, column in SERIES:
        curve = alive_mean_curve(tables[source][column].tolist(), max_len, name=f"{source}.{column}")
        curve["smoothed"] = ema(curve["mean"].to_numpy(), smoothing) if len(curve) else []
        parts.append(curve.assign(series=series))
    return pd.concat(parts, ignore_index=True)[["series", "step", "mean", "n_alive", "smoothed"]]


def entce_scalars(samples: pd.DataFrame, human: pd.DataFrame, *, max_len: int | None = 1000) -> dict[str, Any]:
    """Token-weighted means over the first ``max_len`` steps and EntCE = entropy − log loss (nats/token).

    ``entce`` uses the exact log loss (+inf if a truncating decode gives a human token zero probability);
    ``entce_finite`` uses the scorer's finite variant.
    """
    _check_inputs(samples, human)
    ent, n_gen = token_weighted_mean(samples["entropy"].tolist(), max_len, "samples.entropy")
    ll, n_human = token_weighted_mean(human["logloss"].tolist(), max_len, "human.logloss")
    llf, _ = token_weighted_mean(human["logloss_finite"].tolist(), max_len, "human.logloss_finite")
    h_ent, _ = token_weighted_mean(human["entropy"].tolist(), max_len, "human.entropy")
    out = {"max_len": max_len, "n_samples": len(samples), "n_docs": len(human),
           "n_tokens_generated": n_gen, "n_tokens_human": n_human, "entropy": ent, "logloss": ll,
           "logloss_finite": llf, "human_entropy": h_ent, "entce": ent - ll, "entce_finite": ent - llf,
           "mean_gen_len": float(samples["entropy"].map(len).mean()) if len(samples) else float("nan")}
    if "ended_eos" in samples.columns:
        out["frac_ended_eos"] = float(samples["ended_eos"].mean()) if len(samples) else float("nan")
    if "outside_kept" in human.columns:
        flags, _ = _ragged(human["outside_kept"].map(lambda a: np.asarray(a, float)).tolist(), max_len, "outside")
        out["frac_outside_kept"] = float(flags.mean()) if flags.size else float("nan")
    return out


def document_sums(samples: pd.DataFrame, human: pd.DataFrame, *, max_len: int | None = 1000) -> pd.DataFrame:
    """Per document: sums and token counts within ``max_len`` steps, the unit the EntCE bootstrap resamples.

    Columns ``doc_id, ent_sum, ent_n, ll_sum, llf_sum, ll_n`` (a document's samples are pooled; nats).
    """
    _check_inputs(samples, human)

    def sums(df: pd.DataFrame, column: str) -> pd.DataFrame:
        cut = df[column].map(lambda a: np.asarray(a, dtype=np.float64)[:max_len])
        return pd.DataFrame({"doc_id": df["doc_id"].to_numpy(), "sum": cut.map(np.sum).to_numpy(dtype=float),
                             "n": cut.map(len).to_numpy(dtype=float)}).groupby("doc_id").sum()

    ent, ll, llf = sums(samples, "entropy"), sums(human, "logloss"), sums(human, "logloss_finite")
    out = pd.concat([ent.add_prefix("ent_"), ll.add_prefix("ll_"), llf["sum"].rename("llf_sum")], axis=1)
    return out.fillna(0.0).reset_index()[["doc_id", "ent_sum", "ent_n", "ll_sum", "llf_sum", "ll_n"]]


def bootstrap_entce(doc_sums: pd.DataFrame, *, n_boot: int, seed: int | Sequence[int] = 0,
                    finite: bool = False) -> np.ndarray:
    """``n_boot`` EntCE values from resampling documents with replacement (samples travel with their document)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot!r}")
    n = len(doc_sums)
    if n == 0:
        raise ValueError("doc_sums is empty")
    w = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=n_boot).astype(np.float64)
    ll = doc_sums["llf_sum" if finite else "ll_sum"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ doc_sums["ent_sum"].to_numpy()) / (w @ doc_sums["ent_n"].to_numpy()) \
            - (w @ ll) / (w @ doc_sums["ll_n"].to_numpy())


def with_entce_ci(table: pd.DataFrame, docs: Iterable[pd.DataFrame], *, n_boot: int, seed: int,
                  ci: float) -> pd.DataFrame:
    """``table`` plus entce_lo/entce_hi: percentile bootstrap over documents of each (model, dataset, decode)."""
    bounds = {}
    for d in docs:
        if not len(d):
            continue
        key = (d["model"].iat[0], d["dataset"].iat[0], d["decode"].iat[0])
        draws = bootstrap_entce(d, n_boot=n_boot, seed=stable_seed(seed, "entce", *key))
        draws = draws[np.isfinite(draws)]
        bounds[key] = np.quantile(draws, [(1 - ci) / 2, (1 + ci) / 2]) if len(draws) else (np.nan, np.nan)
    keys = list(zip(table["model"], table["dataset"], table["decode"]))
    lo_hi = np.array([bounds.get(k, (np.nan, np.nan)) for k in keys], dtype=float).reshape(len(keys), 2)
    return table.assign(entce_lo=lo_hi[:, 0], entce_hi=lo_hi[:, 1])


# ---------------------------------------------------------------- tables across models (§4)

def family_of(model: str, families: Mapping[str, Sequence[str]]) -> str:
    """Family whose glob patterns match ``model`` (first match in mapping order); the model itself otherwise."""
    for family, patterns in families.items():
        if any(fnmatch.fnmatchcase(model, p) for p in patterns):
            return family
    return model


def temperature_of(decode: Mapping[str, Any]) -> float | None:
    """τ of a pure-temperature decode config; None when it also truncates (top-k/p, min-p, ε)."""
    if any(decode.get(k) is not None for k in _TRUNCATIONS):
        return None
    return float(decode.get("temperature", 1.0))


def stable_seed(seed: int, *keys: str) -> list[int]:
    """Seed sequence from ``seed`` and names, so a bootstrap does not depend on the order jobs are listed."""
    return [int(seed)] + [zlib.crc32(k.encode()) for k in keys]


def size_fits(table: pd.DataFrame, doc_sums: Mapping[tuple[str, str], pd.DataFrame], *, decode: str,
              size_key: str = "n_params_non_embedding", size_unit: float = 1e9, negative: str = "drop",
              n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fit ln EntCE = intercept + slope·ln(size/size_unit) per (family, dataset) at decode ``decode`` (τ = 1).

    ``table`` has one row per (model, dataset, decode) with ``family``, ``entce`` and the size column; ``doc_sums``
    maps (model, dataset) → document_sums at that decode. Two intervals:
    ``slope_lo/slope_hi`` resample documents within each model and refit (sampling noise of EntCE, the spec's
    bootstrap); ``slope_points_lo/hi`` come from ``lmcal.scaling.fit_loglog`` resampling the models.
    EntCE ≤ 0 has no logarithm: ``negative="drop"`` leaves such points out with a warning (and so in each
    replicate), ``"abs"`` fits ln|EntCE| and records how many were negative. Returns (fits, bootstrap draws).
    """
    if negative not in NEGATIVE_POLICIES:
        raise ValueError(f"negative must be one of {NEGATIVE_POLICIES}, got {negative!r}")
    _check_columns(table, ("model", "dataset", "decode", "family", "entce", size_key), "entce")
    if not size_unit > 0:
        raise ValueError(f"size_unit must be > 0, got {size_unit!r}")
    if decode not in set(table["decode"]):
        raise ValueError(f"decode {decode!r} (the reference decode) has no rows; decodes: {sorted(set(table['decode']))}")
    rows, draws = [], []
    base = table[table["decode"] == decode]
    for (family, dataset), grp in base.groupby(["family", "dataset"], sort=True):
        grp = grp.sort_values(size_key)
        x = grp[size_key].to_numpy(dtype=float) / size_unit
        y = grp["entce"].to_numpy(dtype=float)
        keep = _usable(y, negative)
        dropped = grp["model"][~keep].tolist()
        if dropped:
            msg = f"{family}/{dataset}: EntCE <= 0 for {dropped}; left out of the log-log fit"
            warnings.warn(msg)
            log.warning(msg)
        row = {"family": family, "dataset": dataset, "decode": decode, "size_key": size_key,
               "size_unit": size_unit, "negative": negative, "models": grp["model"].tolist(),
               "n_models": len(grp), "n_fit": int(keep.sum()), "dropped": dropped,
               "n_negative": int((y < 0).sum()), "n_boot": n_boot, "ci": ci}
        if keep.sum() < 2 or np.unique(x[keep]).size < 2:
            rows.append({**row, "status": f"not fitted: {int(keep.sum())} usable point(s)"})
            continue
        fit = fit_loglog(x[keep], np.abs(y[keep]), n_boot=n_boot, seed=seed, ci=ci)
        boot = np.column_stack([bootstrap_entce(doc_sums[(m, dataset)], n_boot=n_boot,
                                                seed=stable_seed(seed, m, dataset)) for m in grp["model"]])
        reps = _refit_replicates(x, boot, negative)
        lo, hi = (1 - ci) / 2, (1 + ci) / 2
        valid = np.isfinite(reps[:, 0])
        q = np.quantile(reps[valid], [lo, hi], axis=0) if valid.sum() >= 2 else np.full((2, 2), np.nan)
        rows.append({**row, "status": "ok", "slope": fit["slope"], "intercept": fit["intercept"], "r2": fit["r2"],
                     "slope_lo": q[0, 0], "slope_hi": q[1, 0], "intercept_lo": q[0, 1], "intercept_hi": q[1, 1],
                     "slope_points_lo": fit["slope_lo"], "slope_points_hi": fit["slope_hi"],
                     "n_boot_valid": int(valid.sum())})
        draws.append(pd.DataFrame({"family": family, "dataset": dataset, "replicate": np.arange(n_boot),
                                   "slope": reps[:, 0], "intercept": reps[:, 1]}))
    draws_df = pd.concat(draws, ignore_index=True) if draws else pd.DataFrame(
        columns=["family", "dataset", "replicate", "slope", "intercept"])
    return pd.DataFrame(rows), draws_df


def _usable(y: np.ndarray, negative: str) -> np.ndarray:
    return np.isfinite(y) & ((y > 0) if negative == "drop" else (y != 0))


def _refit_replicates(x: np.ndarray, boot: np.ndarray, negative: str) -> np.ndarray:
    """(slope, intercept) per bootstrap row of EntCE values; NaN where < 2 distinct usable sizes remain."""
    out = np.full((boot.shape[0], 2), np.nan)
    for b, y in enumerate(boot):
        keep = _usable(y, negative)
        if np.unique(x[keep]).size >= 2:
            fit = fit_loglog(x[keep], np.abs(y[keep]), n_boot=0)
            out[b] = fit["slope"], fit["intercept"]
    return out


def temperature_table(table: pd.DataFrame, decodes: Mapping[str, Mapping[str, Any]],
                      use: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows of pure-temperature decodes (optionally only those named in ``use``) with a ``temperature`` column,
    sorted for Fig. 3's polyline (EntCE vs human log loss at τ)."""
    names = list(decodes) if use is None else list(use)
    unknown = [n for n in names if n not in decodes]
    if unknown:
        raise ValueError(f"temperature decodes {unknown} are not in the entropy decodes {list(decodes)}")
    temps = {n: temperature_of(decodes[n]) for n in names}
    temps = {n: t for n, t in temps.items() if t is not None}
    out = table[table["decode"].isin(list(temps))].copy()
    out["temperature"] = out["decode"].map(temps)
    return out.sort_values(["dataset", "model", "temperature"]).reset_index(drop=True)


def entce_table(records: Sequence[Mapping[str, Any]], families: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """One row per (model, dataset, decode) from the per-job scalar records, with a ``family`` column."""
    if not records:
        raise ValueError("records is empty: no EntCE scalars to tabulate")
    table = pd.DataFrame([dict(r) for r in records])
    _check_columns(table, ("model", "dataset", "decode", "entce"), "records")
    if table.duplicated(["model", "dataset", "decode"]).any():
        raise ValueError("records hold duplicate (model, dataset, decode) rows")
    for col in ("entce", "entce_finite", "entropy", "logloss", "logloss_finite", "human_entropy"):
        if col in table.columns:  # JSON stores non-finite values as null
            table[col] = pd.to_numeric(table[col], errors="coerce").astype(float)
    table["family"] = table["model"].map(lambda m: family_of(m, families))
    return table.sort_values(["dataset", "family", "model", "decode"]).reset_index(drop=True)


def exponent_table(fits: pd.DataFrame, zipf: Mapping[str, Mapping[str, Any]], *, v: int, m_lo: float,
                   m_hi: float | None, n_m: int = 10) -> pd.DataFrame:
    """Theory beside measurement per (dataset, family): Zipf α (CI), predicted exponent 1/α − 1 (CI), the finite-v
    exact-sum slope at α (what a v-token vocabulary actually predicts over [m_lo, m_hi]) and the fitted slope."""
    from lmcal.entropy.theory import theory_slopes

    rows = []
    for dataset, z in sorted(zipf.items()):
        a, (a_lo, a_hi) = float(z["alpha"]), z["alpha_ci"]
        finite = theory_slopes([a], v=v, m_lo=m_lo, m_hi=m_hi, n_m=n_m)["slope"].iloc[0] if a > 0 else np.nan
        base = {"dataset": dataset, "alpha": a, "alpha_lo": a_lo, "alpha_hi": a_hi, "predicted": 1 / a - 1,
                "predicted_lo": 1 / a_hi - 1, "predicted_hi": 1 / a_lo - 1, "finite_v_slope": float(finite),
                "tokenizer": z.get("tokenizer")}
        fam = fits[fits["dataset"] == dataset] if len(fits) else fits
        if fam.empty:
            rows.append(base)
        for _, f in fam.iterrows():
            rows.append({**base, "family": f["family"], "status": f["status"], "n_fit": f["n_fit"],
                         "measured": f.get("slope", np.nan), "measured_lo": f.get("slope_lo", np.nan),
                         "measured_hi": f.get("slope_hi", np.nan)})
    return pd.DataFrame(rows)


def analyse_run(samples: pd.DataFrame, human: pd.DataFrame, *, model: str, dataset: str, decode: str,
                decode_config: Mapping[str, Any], model_info: Mapping[str, Any], max_len: int | None,
                smoothing: float) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame]:
    """Everything one (model, dataset, decode) contributes: (curves, scalar record, document sums).

    The record carries the real parameter counts (``n_params`` and ``n_params_non_embedding`` from
    ``model_info.json``) and the decode's temperature (None for truncating decodes).
    """
    keys = {"model": model, "dataset": dataset, "decode": decode}
    curves = entropy_curves(samples, human, max_len=max_len, smoothing=smoothing).assign(**keys)
    record = {**keys, **entce_scalars(samples, human, max_len=max_len), "smoothing": smoothing,
              "temperature": temperature_of(decode_config),
              "decode_config": json.dumps(dict(decode_config), sort_keys=True),
              "n_params": int(model_info["n_params"]),
              "n_params_non_embedding": int(model_info["n_params_non_embedding"])}
    return curves, record, document_sums(samples, human, max_len=max_len).assign(**keys)


def study_summary(table: pd.DataFrame, fits: pd.DataFrame, exponents: pd.DataFrame,
                  zipf: Mapping[str, Mapping[str, Any]], theory: pd.DataFrame, toy: pd.DataFrame,
                  settings: Mapping[str, Any]) -> dict[str, Any]:
    """``results/entropy/summary.json``: EntCE per (model, dataset, decode), fitted exponents with CIs, Zipf α per
    corpus with CI, and the toy learner's slopes beside 1/α − 1."""
    def records(df: pd.DataFrame, cols: Sequence[str]) -> list[dict[str, Any]]:
        keep = [c for c in cols if c in df.columns]
        return io.jsonable(df[keep].to_dict(orient="records"))

    from lmcal.entropy.claims import entropy_claims

    return {
        "settings": dict(settings),
        "claims": entropy_claims(table, fits, exponents, reference_decode=settings["reference_decode"],
                                 ci=float(settings.get("ci", 0.95))),
        "entce": records(table, ["model", "dataset", "decode", "family", "temperature", "entce", "entce_lo",
                                 "entce_hi", "entce_finite",
                                 "entropy", "logloss", "n_params", "n_params_non_embedding", "n_samples",
                                 "n_tokens_generated", "n_tokens_human"]),
        "size_fits": records(fits, ["family", "dataset", "status", "n_fit", "dropped", "slope", "slope_lo",
                                    "slope_hi", "intercept", "intercept_lo", "intercept_hi", "slope_points_lo",
                                    "slope_points_hi", "r2"]),
        "zipf": io.jsonable({d: {k: z[k] for k in ("alpha", "alpha_ci", "alpha_ci_percentile", "boot_bias", "k_used",
                                                 "min_count_top_k", "n_docs", "n_tokens", "tokenizer")
                               if k in z} for d, z in zipf.items()}),
        "exponents": records(exponents, ["dataset", "family", "alpha", "predicted", "predicted_lo", "predicted_hi",
                                         "finite_v_slope", "measured", "measured_lo", "measured_hi"]),
        "theory_slopes": records(theory, ["alpha", "predicted", "slope", "slope_small", "c_alpha"]),
        "toy_generator": records(toy, ["alpha", "predicted", "steps", "slope_entce", "slope_q",
                                       "slope_entce_predicted"]),
    }
