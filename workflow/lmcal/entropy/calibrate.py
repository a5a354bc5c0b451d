"""The future-entropy calibrated sampler on real models (spec entropy-calibration §6; issue 11, the DAG study).

Per (model, dataset) the entropy study's prompt set is split by document id into a *fit* half and an *eval* half
(`split_documents`). On the fit half the coefficient ``a`` of  log p~ = (1+a) log p^ - a F - log Z  is the grid
point of least teacher-forced human log loss (`lmcal.lm.future.fit_a`; the grid holds 0, so the base model is
always feasible). On the eval half the calibrated sampler draws one continuation per entropy-study sample at the
same sample indices and seeds (``sample_rng(seed, sample_idx)``: at a = 0 it is the τ = 1 sample token for
token), and EntCE = mean sampled entropy − mean human log loss of p~ is reported beside every entropy-study
decode restricted to the same eval documents (`decode_points`, from the study's per-document sums).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lmcal.core import io

METHODS = ("lookahead", "rollout", "head")


def split_documents(doc_ids: Sequence[str], fit_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """(fit ids, eval ids): disjoint, covering ``doc_ids``, each in input order, decided by a hash of (seed, id).

    The halves depend on the set of ids and the seed only (not their order), so every model of a dataset (the
    same selected ids) gets the same split. Both halves are non-empty.
    """
    ids = [str(d) for d in doc_ids]
    if len(set(ids)) != len(ids):
        raise ValueError("doc_ids: duplicate document ids; a split by id needs each document once")
    if len(ids) < 2:
        raise ValueError(f"doc_ids: need at least 2 documents to split into fit and eval halves, got {len(ids)}")
    if not 0 < fit_fraction < 1:
        raise ValueError(f"fit_fraction must be in (0, 1), got {fit_fraction!r}")
    n_fit = min(max(round(fit_fraction * len(ids)), 1), len(ids) - 1)
    rank = sorted(ids, key=lambda d: hashlib.sha256(f"{int(seed)}/{d}".encode()).hexdigest())
    fit = set(rank[:n_fit])
    return [d for d in ids if d in fit], [d for d in ids if d not in fit]


def decode_points(docsums: Mapping[str, pd.DataFrame], doc_ids: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per decode: token-weighted entropy, log loss (exact and finite), EntCE over the documents ``doc_ids``.

    ``docsums`` maps a decode name to the entropy study's per-document sums (columns ``doc_id, ent_sum, ent_n,
    ll_sum, llf_sum, ll_n``, `lmcal.entropy.analysis.document_sums`).
    """
    out = {}
    for name, df in docsums.items():
        sub = df[df["doc_id"].astype(str).isin({str(d) for d in doc_ids})]
        missing = set(map(str, doc_ids)) - set(sub["doc_id"].astype(str))
        if missing:
            raise ValueError(f"decode {name}: per-document sums lack document(s) {sorted(missing)[:3]}")
        ent, ll = sub["ent_sum"].sum() / sub["ent_n"].sum(), sub["ll_sum"].sum() / sub["ll_n"].sum()
        out[name] = {"entropy": float(ent), "logloss": float(ll), "logloss_finite": float(sub["llf_sum"].sum()
                                                                                          / sub["ll_n"].sum()),
                     "entce": float(ent - ll), "n_tokens_generated": int(sub["ent_n"].sum()),
                     "n_tokens_human": int(sub["ll_n"].sum())}
    return out


def calibration_for(method: str, settings: Mapping[str, Any], a: float = 0.0, head=None):
    """The `FutureCalibration` of a configured method: lookahead {k}, rollout {k, m, h}, head (a trained
    `lmcal.lm.future_head.FutureHead`; its settings describe how it was trained, the head gives every token's F)."""
    from lmcal.lm.future import FutureCalibration

    if method not in METHODS:
        raise ValueError(f"entropy_calibrate.methods: unknown method {method!r} (known: {METHODS})")
    if method == "head":
        if head is None:
            raise ValueError("entropy_calibrate.methods.head: no trained head given (rule entropy_calibrate_head)")
        return FutureCalibration(a=float(a), kind="head", head=head)
    s = dict(settings or {})
    return FutureCalibration(a=float(a), kind=method, top_k=int(s.get("k", 4)), n_rollouts=int(s.get("m", 4)),
                             horizon=int(s.get("h", 4)))


def human_nll_grid(model, prompts, responses, sample_idx, cal, a_grid, *, seed: int, batch_size: int,
                   pad_token_id: int, eos_token_ids) -> tuple[np.ndarray, int]:
    """`calibrated_nll_grid` in batches: (summed nats per grid point, tokens). Rollouts draw from the
    document's own ``future_rng(seed, sample_idx)``, so a batch size change cannot change the result's law."""
    from lmcal.lm.future import calibrated_nll_grid
    from lmcal.lm.sampling import future_rng

    total, n_tok = np.zeros(len(a_grid)), 0
    for b in range(0, len(prompts), batch_size):
        sl = slice(b, b + batch_size)
        nll, n = calibrated_nll_grid(model, prompts[sl], responses[sl], cal, a_grid, pad_token_id=pad_token_id,
                                     eos_token_ids=eos_token_ids,
                                     rngs=[future_rng(seed, i) for i in sample_idx[sl]])
        total, n_tok = total + nll, n_tok + n
    return total, n_tok


def sample_calibrated(model, prompts, doc_ids, sample_idx, cal, *, seed: int, max_new_tokens: int,
                      batch_size: int, pad_token_id: int, eos_token_ids) -> pd.DataFrame:
    """One calibrated sample per (prompt, sample_idx), drawn from ``sample_rng(seed, sample_idx)`` as the
    entropy study draws its samples; rows in the `lmcal.lm.sampling.SAMPLE_COLUMNS` schema."""
    from lmcal.lm.decode import DecodeConfig
    from lmcal.lm.sampling import future_rng, sample_batch, sample_rng, samples_frame

    records = []
    for b in range(0, len(prompts), batch_size):
        sl = slice(b, b + batch_size)
        rows = sample_batch(model, prompts[sl], [sample_rng(seed, i) for i in sample_idx[sl]],
                            decode=DecodeConfig(), max_new_tokens=max_new_tokens, eos_token_ids=eos_token_ids,
                            pad_token_id=pad_token_id, calibration=cal,
                            future_rngs=[future_rng(seed, i) for i in sample_idx[sl]])
        for d, i, p, r in zip(doc_ids[sl], sample_idx[sl], prompts[sl], rows):
            records.append({"doc_id": str(d), "sample_idx": int(i), "prompt_len": len(p), "gen_len": len(r["tokens"]),
                            **r})
    return samples_frame(records)


def _expand_samples(prompts: pd.DataFrame, keep: set[str], samples_per_prompt: int):
    """(prompt ids, doc ids, sample indices) of the rows of ``keep``; sample_idx = row * spp + j as in the study."""
    rows = [(list(p), str(d), r * samples_per_prompt + j) for r, (p, d) in
            enumerate(zip(prompts["prompt_ids"], prompts["doc_id"])) if str(d) in keep
            for j in range(samples_per_prompt)]
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def calibrate_one(model, prompts: pd.DataFrame, docsums: Mapping[str, pd.DataFrame], *, method: str,
                  settings: Mapping[str, Any], a_grid: Sequence[float], fit_fraction: float, split_seed: int,
                  seed: int, max_new_tokens: int, samples_per_prompt: int, batch_size: int, max_len: int | None,
                  reference_decode: str, pad_token_id: int, eos_token_ids, head=None
                  ) -> tuple[dict[str, Any], pd.DataFrame]:
    """Fit ``a`` on the fit half, sample and score on the eval half: (record, calibrated eval samples);
    ``head`` is the trained future head of method ``head`` (trained on the fit half only)."""
    from lmcal.lm.future import fit_a

    grid = [float(a) for a in a_grid]
    if reference_decode not in docsums:
        raise ValueError(f"reference decode {reference_decode!r} is not among the entropy decodes {sorted(docsums)}")
    fit_ids, eval_ids = split_documents(prompts["doc_id"].tolist(), fit_fraction, split_seed)
    cut = (lambda r: list(r)[:max_len]) if max_len else list  # the entropy analysis counts the first max_len steps
    by_id = prompts.set_index(prompts["doc_id"].astype(str))

    def human(ids):
        return ([list(by_id.loc[d, "prompt_ids"]) for d in ids], [cut(by_id.loc[d, "continuation_ids"]) for d in ids],
                [int(prompts.index[prompts["doc_id"].astype(str) == d][0]) * samples_per_prompt for d in ids])

    cal0 = calibration_for(method, settings, head=head)
    common = {"seed": seed, "batch_size": batch_size, "pad_token_id": pad_token_id, "eos_token_ids": eos_token_ids}
    t0 = time.perf_counter()
    nll_fit, n_fit = human_nll_grid(model, *human(fit_ids), cal0, grid, **common)
    a = fit_a(grid, nll_fit)
    nll_eval, n_eval = human_nll_grid(model, *human(eval_ids), cal0, grid, **common)
    t1 = time.perf_counter()
    cal = calibration_for(method, settings, a, head=head)
    ids, docs, idx = _expand_samples(prompts, set(eval_ids), samples_per_prompt)
    samples = sample_calibrated(model, ids, docs, idx, cal, seed=seed, max_new_tokens=max_new_tokens, **{
        k: common[k] for k in ("batch_size", "pad_token_id", "eos_token_ids")})
    t2 = time.perf_counter()
    ent_lists = [np.asarray(e, dtype=np.float64)[:max_len] for e in samples["entropy"]]
    n_gen = int(sum(len(e) for e in ent_lists))
    entropy = float(sum(e.sum() for e in ent_lists) / n_gen)
    g0 = grid.index(0.0)
    ll, ll0 = float(nll_eval[grid.index(a)] / n_eval), float(nll_eval[g0] / n_eval)
    points = decode_points(docsums, eval_ids)
    ref = points[reference_decode]
    record = {"method": method, "settings": dict(settings or {}), "calibration": cal.to_dict(), "a": a,
              "fit_doc_ids": fit_ids, "eval_doc_ids": eval_ids, "a_grid": grid,
              "fit_logloss_grid": (nll_fit / n_fit).tolist(), "eval_logloss_grid": (nll_eval / n_eval).tolist(),
              "n_tokens_fit": n_fit, "n_tokens_eval": n_eval, "n_samples": len(samples),
              "n_tokens_generated": n_gen, "entropy": entropy, "logloss": ll, "entce": entropy - ll,
              "tau1": {"entropy": ref["entropy"], "logloss": ll0, "entce": ref["entropy"] - ll0,
                       "logloss_scorer": ref["logloss"]},
              "reference_decode": reference_decode, "decodes": points,
              "wall_s": {"fit_and_eval_logloss": t1 - t0, "sampling": t2 - t1},
              "sampled_tokens_per_s": n_gen / (t2 - t1) if t2 > t1 else None}
    return record, samples


def run_calibration(model_dir: str | os.PathLike, prompt_files: Sequence[str], docsum_files: Sequence[str],
                    records_out: Sequence[str], samples_out: Sequence[str], *, methods: Mapping[str, Mapping],
                    decodes: Sequence[str], head_file: str | None = None, **kw) -> dict[str, Any]:
    """Job entry: every (dataset, method) of one model; ``records_out``/``samples_out`` are the paths
    ``.../data~{d}/method~{k}.json|.parquet`` and ``docsum_files`` the study's ``.../data~{d}/decode~{k}.parquet``;
    ``head_file`` is the model's trained head (`lmcal.lm.future_head.save_head`) when method ``head`` runs."""
    from lmcal.core.paths import output_key, run_key
    from lmcal.lm.padding import pad_token_id
    from lmcal.models.store import load_model, load_model_info

    model, tok = load_model(model_dir)
    info = load_model_info(model_dir)
    head = None
    if "head" in methods:
        from lmcal.lm.future_head import load_head

        if not head_file:
            raise ValueError("method head needs the model's trained head file (rule entropy_calibrate_head)")
        head = load_head(head_file)
    prompts = {output_key(p)[0]: Path(p) for p in prompt_files if str(p).endswith(".parquet")}
    sums: dict[str, dict[str, pd.DataFrame]] = {}
    for f in docsum_files:
        k = run_key(f)
        if k["decode"] in decodes:
            sums.setdefault(k["dataset"], {})[k["decode"]] = io.read_parquet(f)
    out = {}
    for rec_path, smp_path in zip(records_out, samples_out):
        dataset, method = _data_method(rec_path)
        if _data_method(smp_path) != (dataset, method):
            raise ValueError(f"record and samples outputs are not aligned: {rec_path} / {smp_path}")
        record, samples = calibrate_one(model, pd.read_parquet(prompts[dataset]), sums[dataset], method=method,
                                        settings=methods[method], pad_token_id=pad_token_id(tok),
                                        eos_token_ids=info.eos_token_ids, head=head if method == "head" else None,
                                        **kw)
        record = {"model": info.name, "dataset": dataset, **record}
        io.write_parquet(samples, smp_path)
        io.write_json(record, rec_path)
        out[f"{dataset}/{method}"] = {k: record[k] for k in ("a", "entce", "logloss", "entropy")}
    return out


def _data_method(path) -> tuple[str, str]:
    parts = {k: v for k, _, v in (seg.partition("~") for seg in Path(path).with_suffix("").parts) if v}
    if "data" not in parts or "method" not in parts:
        raise ValueError(f"path {path!r} does not follow .../data~<dataset>/method~<method>.<ext>")
    return parts["data"], parts["method"]
