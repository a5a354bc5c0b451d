"""Why EntCE shrinks slowly with scale: Zipf exponents of corpora and the toy power-law learner.

Spec: /work/shared/specs/entropy-calibration.md §5 (paper Cao, Valiant & Liang 2025, §3 and App. B.4).

The toy learner sees m i.i.d. training tokens drawn from p_i = i^(-α)/Z (i = 1..v, Z = Σ_{i≤v} i^(-α)) and
generates from its empirical unigram distribution until it emits a token it saw exactly once in training (a
singleton); from then on it is "derailed" and its entropy is C_H nats higher. The per-step derail rate is
q = K_{m,1}/m (K_{m,1}: number of singletons), and EntCE over a short horizon is ∝ q, so the scaling exponent of
EntCE is the exponent of E[K_{m,1}/m] ≈ C_α·m^(1/α−1) (Prop. 3.1; Good 1953, Karlin 1967).

All rates are fractions of tokens; entropies and EntCE are in nats.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.special import gamma, gammainc, zeta
from tqdm.auto import tqdm

# ---------------------------------------------------------------- the toy learner (§5)

def _check_alpha_v(alpha: float, v: int) -> None:
    if not np.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a positive finite Zipf exponent, got {alpha!r}")
    if int(v) != v or v < 2:
        raise ValueError(f"v (vocabulary size) must be an integer >= 2, got {v!r}")


def _as_m(m: float | Sequence[float] | np.ndarray) -> np.ndarray:
    m_arr = np.atleast_1d(np.asarray(m, dtype=np.float64))
    if np.any(~np.isfinite(m_arr)) or np.any(m_arr < 1):
        raise ValueError(f"m (number of training tokens) must be >= 1, got {m!r}")
    return m_arr


def zipf_probs(alpha: float, v: int) -> np.ndarray:
    """p_i = i^(-α)/Z for i = 1..v (float64, sums to 1). Z normalises; the paper's printed "Z/i^α" is a typo."""
    _check_alpha_v(alpha, v)
    w = np.arange(1, int(v) + 1, dtype=np.float64) ** (-float(alpha))
    return w / w.sum()


def log_spaced_m(lo: float, hi: float, n: int) -> np.ndarray:
    """``n`` log-spaced training-set sizes in [lo, hi], rounded to integers (duplicates removed)."""
    if not (1 <= lo < hi):
        raise ValueError(f"need 1 <= lo < hi for the m range, got lo={lo!r}, hi={hi!r}")
    if n < 2:
        raise ValueError(f"n (number of m values) must be >= 2, got {n!r}")
    return np.unique(np.round(np.logspace(np.log10(lo), np.log10(hi), int(n))).astype(np.int64))


def expected_singleton_rate(alpha: float, m, v: int) -> np.ndarray:
    """Exact E[K_{m,1}/m] = Σ_i p_i (1 − p_i)^(m−1) for each m (fraction of training tokens that are singletons).

    Vectorised over the vocabulary (v = 10^6 takes ~10 ms per m); (1−p)^(m−1) is computed as exp((m−1)·log1p(−p))
    so tiny p_i keep full precision.
    """
    p = zipf_probs(alpha, v)
    log1m = np.log1p(-p)
    return np.array([np.dot(p, np.exp((mi - 1.0) * log1m)) for mi in _as_m(m)])


def c_alpha(alpha: float) -> float:
    """C_α = Γ(1 − 1/α) / (α·ζ(α)^(1/α)), the v → ∞, m → ∞ constant of Prop. 3.1 (defined for α > 1 only)."""
    if not alpha > 1:
        raise ValueError(f"alpha must be > 1 for C_alpha (zeta(alpha) diverges otherwise), got {alpha!r}")
    return float(gamma(1 - 1 / alpha) / (alpha * zeta(alpha) ** (1 / alpha)))


def singleton_rate_asymptotic(alpha: float, m) -> np.ndarray:
    """C_α·m^(1/α−1): the large-m, infinite-vocabulary limit of E[K_{m,1}/m] (α > 1 and m ≪ v only)."""
    return c_alpha(alpha) * _as_m(m) ** (1 / alpha - 1)


def singleton_rate_integral(alpha: float, m, v: int) -> np.ndarray:
    """(1/α)·Z^(−1/α)·γ(1−1/α, m/Z)·m^(1/α−1) with the finite-v Z: the integral approximation before m → ∞."""
    if not alpha > 1:
        raise ValueError(f"alpha must be > 1 for the incomplete-gamma form, got {alpha!r}")
    _check_alpha_v(alpha, v)
    m_arr = _as_m(m)
    z = float(np.sum(np.arange(1, int(v) + 1, dtype=np.float64) ** (-alpha)))
    s = 1 - 1 / alpha
    lower_gamma = gammainc(s, m_arr / z) * gamma(s)  # scipy's gammainc is regularised
    return (1 / alpha) * z ** (-1 / alpha) * lower_gamma * m_arr ** (1 / alpha - 1)


def _zipf_cdf(alpha: float, v: int) -> np.ndarray:
    cdf = np.cumsum(zipf_probs(alpha, v))
    cdf[-1] = 1.0
    return cdf


def sample_zipf(cdf: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` i.i.d. token ids (0-based ranks) by inverse-CDF lookup."""
    return np.searchsorted(cdf, rng.random(int(n)), side="right")


def singleton_rate_monte_carlo(alpha: float, m, v: int, *, n_draws: int = 100, seed: int = 0
                               ) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo E[K_{m,1}/m]: mean over ``n_draws`` training sets of (#ids with bincount == 1)/m.

    Returns (mean, standard error of the mean) per m.
    """
    if n_draws < 2:
        raise ValueError(f"n_draws must be >= 2 to have a standard error, got {n_draws!r}")
    m_arr = _as_m(m).astype(np.int64)
    cdf = _zipf_cdf(alpha, v)
    rng = np.random.default_rng(seed)
    means, ses = [], []
    for mi in tqdm(m_arr, desc=f"MC singletons α={alpha:g}", leave=False):
        rates = np.empty(n_draws)
        for d in range(n_draws):
            counts = np.bincount(sample_zipf(cdf, mi, rng), minlength=int(v))
            rates[d] = np.count_nonzero(counts == 1) / mi
        means.append(rates.mean())
        ses.append(rates.std(ddof=1) / np.sqrt(n_draws))
    return np.array(means), np.array(ses)


def loglog_slope(x, y) -> float:
    """OLS slope of log y on log x (natural logs) for noiseless theory curves."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.size < 2 or np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("x and y must be equally long (>= 2) positive arrays for a log-log slope")
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def toy_generator_entce(alpha: float, m: int, v: int, *, steps: int = 8, n_seq: int = 2000, n_train: int = 20,
                        c_h: float = 1.0, seed: int = 0) -> dict[str, float]:
    """Run the toy generator and return its EntCE (nats/token) with the prediction it should match.

    For each of ``n_train`` training sets of m Zipf(α, v) tokens, ``n_seq`` sequences of ``steps`` tokens are drawn
    from the empirical unigram distribution (a uniformly random training position). A sequence derails at the
    first generated token whose training count is 1; derailment is absorbing, so what the derailed distribution
    emits afterwards cannot change the entropy path and is not simulated. The entropy at step t (after t generated
    tokens, t = 1..steps) is H_0 + C_H·[derailed by t]; human log loss equals H_0 because teacher-forced text never
    derails the model, so EntCE = C_H·mean_t P(derailed by t).
    Prediction given a training set with rate q = K_1/m: C_H·mean_t (1 − (1−q)^t) ≈ C_H·q·(steps+1)/2 for q·steps ≪ 1.
    """
    if steps < 1 or n_seq < 2 or n_train < 1:
        raise ValueError(f"need steps >= 1, n_seq >= 2, n_train >= 1; got {steps!r}, {n_seq!r}, {n_train!r}")
    if not c_h > 0:
        raise ValueError(f"c_h (entropy jump after derailing, nats) must be > 0, got {c_h!r}")
    cdf = _zipf_cdf(alpha, v)
    rng = np.random.default_rng(seed)
    t = np.arange(1, steps + 1)
    entce, predicted, q_seen = [], [], []
    for _ in range(n_train):
        train = sample_zipf(cdf, m, rng)
        counts = np.bincount(train, minlength=int(v))
        is_singleton = counts[train] == 1  # per training position
        drawn = is_singleton[rng.integers(0, m, size=(n_seq, steps))]
        derailed = np.logical_or.accumulate(drawn, axis=1)  # derailed[:, t-1]: derailed by step t
        entce.append(c_h * derailed.mean())
        q = np.count_nonzero(counts == 1) / m
        q_seen.append(q)
        predicted.append(c_h * np.mean(1 - (1 - q) ** t))
    entce_arr = np.asarray(entce)
    se = entce_arr.std(ddof=1) / np.sqrt(n_train) if n_train > 1 else float("nan")
    return {"alpha": alpha, "m": int(m), "v": int(v), "steps": steps, "c_h": c_h, "entce": float(entce_arr.mean()),
            "entce_se": float(se), "entce_predicted": float(np.mean(predicted)), "q": float(np.mean(q_seen))}


def theory_slopes(alphas: Iterable[float], *, v: int, m_lo: float, m_hi: float | None, n_m: int = 10,
                  small_hi: float = 1e3) -> pd.DataFrame:
    """Exact-sum slopes of log E[K_{m,1}/m] vs log m per α, beside the predicted 1/α − 1 and C_α.

    ``m_hi=None`` means v/3 (the paper's "roughly log-log linear up to m ≈ v/3"); ``slope_small`` uses
    [m_lo, small_hi]. Finite v makes the slopes steeper than 1/α − 1 (spec §5 table).
    """
    m_hi = v / 3 if m_hi is None else m_hi
    rows = []
    for a in alphas:
        ms, ms_small = log_spaced_m(m_lo, m_hi, n_m), log_spaced_m(m_lo, small_hi, n_m)
        rows.append({"alpha": float(a), "predicted": 1 / a - 1, "v": int(v), "m_lo": float(m_lo),
                     "m_hi": float(m_hi), "n_m": len(ms),
                     "slope": loglog_slope(ms, expected_singleton_rate(a, ms, v)),
                     "slope_small": loglog_slope(ms_small, expected_singleton_rate(a, ms_small, v)),
                     "small_hi": float(small_hi), "c_alpha": c_alpha(a) if a > 1 else float("nan")})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- Zipf exponent of a corpus

_WORD_RE = re.compile(r"\w+|[^\w\s]")


def tokenize_for_zipf(texts: Sequence[str], tokenizer: str, model_dir: str | Path | None = None
                      ) -> tuple[list[np.ndarray], str]:
    """Token-id arrays per document and a description of the tokenisation (recorded with α).

    ``tokenizer="words"``: lower-cased regex words and punctuation (``\\w+|[^\\w\\s]``), ids by first occurrence.
    Anything else: a model name whose tokenizer lives in ``model_dir`` (``results/models/{model}``), no special tokens.
    """
    if tokenizer == "words":
        vocab: dict[str, int] = {}
        docs = [np.array([vocab.setdefault(w, len(vocab)) for w in _WORD_RE.findall(t.lower())], dtype=np.int64)
                for t in tqdm(texts, desc="words", leave=False)]
        return docs, "words: lowercase regex \\w+|[^\\w\\s]"
    if model_dir is None:
        raise ValueError(f"model_dir is required for tokenizer={tokenizer!r} (only 'words' needs no model)")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    docs = [np.asarray(tok(t, add_special_tokens=False, verbose=False)["input_ids"], dtype=np.int64)
            for t in tqdm(texts, desc=f"tokenize ({tokenizer})", leave=False)]
    return docs, f"model tokenizer {tokenizer} ({type(tok).__name__}, vocab {len(tok)}), no special tokens"


def unigram_count_matrix(docs: Sequence[np.ndarray]) -> sparse.csr_matrix:
    """Sparse (documents × vocabulary) matrix of unigram counts, the unit of the document bootstrap."""
    if len(docs) == 0:
        raise ValueError("docs must hold at least one document")
    n_vocab = 1 + max((int(d.max()) for d in docs if len(d)), default=0)
    rows = np.repeat(np.arange(len(docs)), [len(d) for d in docs])
    cols = np.concatenate([np.asarray(d, dtype=np.int64) for d in docs]) if rows.size else np.zeros(0, np.int64)
    mat = sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(len(docs), n_vocab))
    mat.sum_duplicates()
    return mat


def rank_frequency(counts: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rank 1..k, relative frequency) of the ``top_k`` most frequent ids (fewer if fewer were observed)."""
    counts = np.asarray(counts, dtype=np.float64).ravel()
    observed = np.sort(counts[counts > 0])[::-1][:top_k]
    return np.arange(1, observed.size + 1, dtype=np.float64), observed / counts.sum()


def _rank_slope(freqs_sorted: np.ndarray) -> tuple[float, float]:
    x = np.log(np.arange(1, freqs_sorted.size + 1, dtype=np.float64))
    slope, intercept = np.polyfit(x, np.log(freqs_sorted), 1)
    return float(slope), float(intercept)


def fit_zipf_alpha(counts: np.ndarray, top_k: int = 5000) -> dict[str, float]:
    """α = −(OLS slope of log relative frequency on log rank) over the ``top_k`` most frequent unigrams."""
    if top_k < 3:
        raise ValueError(f"top_k must be >= 3 to fit a slope, got {top_k!r}")
    ranks, freqs = rank_frequency(counts, top_k)
    if ranks.size < 3:
        raise ValueError(f"need >= 3 distinct observed tokens to fit Zipf's law, got {ranks.size}")
    slope, intercept = _rank_slope(freqs)
    resid = np.log(freqs) - (intercept + slope * np.log(ranks))
    r2 = 1 - resid.var() / np.log(freqs).var()
    return {"alpha": -slope, "intercept": intercept, "k_used": int(ranks.size), "r2": float(r2)}


def zipf_alpha_with_ci(count_matrix: sparse.spmatrix, *, top_k: int = 5000, n_boot: int = 200, seed: int = 0,
                       ci: float = 0.95) -> dict[str, Any]:
    """Zipf α of a corpus with a CI from a bootstrap over documents.

    Each replicate draws documents with replacement (multinomial weights on the rows), re-ranks the unigram
    counts of the resampled corpus and refits, so the CI covers both count noise and which tokens make the top k.
    The rank-frequency slope is biased low when the top k reaches ranks with only a few counts, and resampling
    reproduces that bias, so ``alpha_ci`` is the basic (reverse-percentile) interval [2α − q_hi, 2α − q_lo], which
    corrects for it; the plain percentile interval is ``alpha_ci_percentile`` and ``boot_bias`` = mean(α*) − α.
    ``min_count_top_k`` (count of the k-th type) flags an undersampled tail.
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2, got {n_boot!r}")
    mat = sparse.csr_matrix(count_matrix)
    n_docs = mat.shape[0]
    totals = np.asarray(mat.sum(axis=0)).ravel()
    point = fit_zipf_alpha(totals, top_k)
    rng = np.random.default_rng(seed)
    alphas = []
    for _ in tqdm(range(n_boot), desc="zipf bootstrap", leave=False):
        weights = rng.multinomial(n_docs, np.full(n_docs, 1 / n_docs)).astype(np.float64)
        _, freqs = rank_frequency(mat.T @ weights, top_k)
        if freqs.size >= 3:
            alphas.append(-_rank_slope(freqs)[0])
    a = point["alpha"]
    if len(alphas) >= 2:
        q_lo, q_hi = np.quantile(alphas, [(1 - ci) / 2, (1 + ci) / 2])
        basic, pct, bias = [2 * a - q_hi, 2 * a - q_lo], [q_lo, q_hi], float(np.mean(alphas) - a)
    else:
        basic, pct, bias = [np.nan, np.nan], [np.nan, np.nan], np.nan
    min_count = float(np.sort(totals[totals > 0])[::-1][: point["k_used"]][-1])
    if min_count < 5:
        warnings.warn(f"zipf: the {point['k_used']}-th most frequent type has only {min_count:g} counts; the "
                      "rank-frequency slope is biased low (alpha_ci is bias-corrected, consider a smaller top_k)")
    return {**point, "alpha_ci": [float(v) for v in basic], "alpha_ci_percentile": [float(v) for v in pct],
            "boot_bias": bias, "n_boot": len(alphas), "ci": ci, "top_k": int(top_k), "n_docs": int(n_docs),
            "n_tokens": int(totals.sum()), "min_count_top_k": min_count}


def singleton_rate_table(alphas: Iterable[float], ms, *, v: int, mc_alphas: Iterable[float] = (),
                         mc_draws: int = 100, seed: int = 0) -> pd.DataFrame:
    """Long table ``alpha, m, v, exact, asymptotic, mc_mean, mc_se`` of E[K_{m,1}/m] (Fig. 4 left).

    ``asymptotic`` (C_α·m^(1/α−1)) is NaN for α ≤ 1; Monte Carlo columns only for α in ``mc_alphas``.
    """
    ms = np.asarray(ms, dtype=np.int64)
    mc_set = {float(a) for a in mc_alphas}
    parts = []
    for a in alphas:
        a = float(a)
        mc_mean, mc_se = (singleton_rate_monte_carlo(a, ms, v, n_draws=mc_draws, seed=seed) if a in mc_set
                          else (np.full(ms.size, np.nan), np.full(ms.size, np.nan)))
        parts.append(pd.DataFrame({"alpha": a, "m": ms, "v": int(v), "exact": expected_singleton_rate(a, ms, v),
                                   "asymptotic": singleton_rate_asymptotic(a, ms) if a > 1 else np.nan,
                                   "mc_mean": mc_mean, "mc_se": mc_se}))
    return pd.concat(parts, ignore_index=True)


def toy_generator_slopes(alphas: Iterable[float], ms, *, v: int, steps: int, n_seq: int, n_train: int,
                         c_h: float = 1.0, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the toy generator over ``ms`` per α: (per-m EntCE table, per-α slopes of ln EntCE and ln q vs ln m).

    The generator's slope matches the slope of ln q only while q·steps ≪ 1; beyond that EntCE saturates at C_H
    (``slope_predicted`` applies the saturation formula to the realised q, so it should match at any horizon).
    """
    runs, slopes = [], []
    for a in alphas:
        res = pd.DataFrame([toy_generator_entce(float(a), int(m), v, steps=steps, n_seq=n_seq, n_train=n_train,
                                                c_h=c_h, seed=seed + k) for k, m in enumerate(ms)])
        runs.append(res)
        slopes.append({"alpha": float(a), "predicted": 1 / a - 1, "steps": steps,
                       "slope_entce": loglog_slope(res["m"], res["entce"]),
                       "slope_entce_predicted": loglog_slope(res["m"], res["entce_predicted"]),
                       "slope_q": loglog_slope(res["m"], res["q"]),
                       "max_q_steps": float(res["q"].max() * steps)})
    return pd.concat(runs, ignore_index=True), pd.DataFrame(slopes)
