"""Training job of the learned future-entropy head (method ``head`` of the calibrated-sampler study; spec §6).

Contexts come from the FIT half of each dataset's prompt documents only (`calibrate.split_documents` with the
study's ``fit_fraction``/``split_seed``, so the evaluation half is never seen): every position of the first
``n_steps`` tokens of the human continuation (human prefixes) and of the model's own τ = 1 sample from the same
prompt (model prefixes; the entropy study's ``sample_rng(seed, sample_idx)``). At each context the top-k
candidates of p^ are labelled with the ``rollout`` estimator (k, m, h), whose rollouts draw from a stream
seeded by (seed, sample index, source), so the labels are deterministic. The fit documents are split again by id
into train and validation documents (``val_fraction``); the record reports the head's RMSE on the validation
pairs against the rollout labels, against the exact next-step (lookahead) entropy, and a constant predictor's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from lmcal.core import io

#: method ``head`` settings and their defaults: label size (k, m, h), contexts per sequence, training.
HEAD_DEFAULTS = {"k": 4, "m": 4, "h": 4, "n_steps": 48, "epochs": 300, "lr": 0.02, "l2": 0.03, "val_fraction": 0.34}
_SOURCES = {"human": 0, "model": 1}


def head_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """``methods.head`` with defaults filled in; unknown keys and bad values are refused by name."""
    s = dict(settings or {})
    unknown = sorted(set(s) - set(HEAD_DEFAULTS))
    if unknown:
        raise ValueError(f"entropy_calibrate.methods.head: unknown key(s) {unknown} (known: {sorted(HEAD_DEFAULTS)})")
    s = {**HEAD_DEFAULTS, **s}
    for key in ("k", "m", "h", "n_steps", "epochs"):
        if isinstance(s[key], bool) or not isinstance(s[key], int) or s[key] < 1:
            raise ValueError(f"entropy_calibrate.methods.head.{key} must be an integer >= 1, got {s[key]!r}")
    if not float(s["lr"]) > 0 or float(s["l2"]) < 0 or not 0 < float(s["val_fraction"]) < 1:
        raise ValueError(f"entropy_calibrate.methods.head: need lr > 0, l2 >= 0, 0 < val_fraction < 1; got "
                         f"{s['lr']!r}, {s['l2']!r}, {s['val_fraction']!r}")
    return s


def _rmse(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(x, float) - np.asarray(y, float)) ** 2)))


def head_sequences(model, prompts: pd.DataFrame, doc_ids: Sequence[str], *, n_steps: int, seed: int,
                   samples_per_prompt: int, pad_token_id: int, eos_token_ids) -> list[dict[str, Any]]:
    """Per document of ``doc_ids`` and source (human, model): prompt ids, the first ``n_steps`` sequence ids and
    the sample index the study gives the document (row * samples_per_prompt)."""
    from lmcal.lm.decode import DecodeConfig
    from lmcal.lm.sampling import sample_batch, sample_rng

    pos = {str(d): i for i, d in enumerate(prompts["doc_id"])}
    rows = [pos[str(d)] for d in doc_ids]
    ps = [list(prompts["prompt_ids"].iloc[r]) for r in rows]
    idx = [r * samples_per_prompt for r in rows]
    gen = sample_batch(model, ps, [sample_rng(seed, i) for i in idx], decode=DecodeConfig(), max_new_tokens=n_steps,
                       eos_token_ids=eos_token_ids, pad_token_id=pad_token_id)
    out = []
    for d, p, i, r, g in zip(doc_ids, ps, idx, rows, gen):
        human = list(prompts["continuation_ids"].iloc[r])[:n_steps]
        out += [{"doc_id": str(d), "source": "human", "prompt": p, "seq": human, "sample_idx": i},
                {"doc_id": str(d), "source": "model", "prompt": p, "seq": list(g["tokens"]), "sample_idx": i}]
    return [o for o in out if o["seq"]]


def label_pairs(model, seqs: Sequence[Mapping[str, Any]], s: Mapping[str, Any], *, seed: int, batch_size: int,
                pad_token_id: int, eos_token_ids) -> dict[str, np.ndarray]:
    """`lmcal.lm.future_head.collect_pairs` over ``seqs`` in batches, each sequence with its own seeded stream."""
    from lmcal.lm.future_head import collect_pairs

    parts = []
    for b in range(0, len(seqs), batch_size):
        chunk = seqs[b:b + batch_size]
        rngs = [np.random.default_rng([int(seed), int(q["sample_idx"]), 2, _SOURCES[q["source"]]]) for q in chunk]
        part = collect_pairs(model, [q["prompt"] for q in chunk], [q["seq"] for q in chunk], rngs, top_k=s["k"],
                             n_rollouts=s["m"], horizon=s["h"], pad_token_id=pad_token_id, eos_token_ids=eos_token_ids)
        part["row"] = part["row"] + b
        parts.append(part)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def train_head(model, prompt_sets: Mapping[str, pd.DataFrame], settings: Mapping[str, Any], *, fit_fraction: float,
               split_seed: int, seed: int, samples_per_prompt: int, batch_size: int, pad_token_id: int,
               eos_token_ids) -> tuple[Any, dict[str, Any]]:
    """(trained `FutureHead`, record) from the fit halves of ``prompt_sets`` (dataset -> prompts table)."""
    from lmcal.entropy.calibrate import split_documents
    from lmcal.lm.future_head import FutureHead, fit_head, head_values

    s = head_settings(settings)
    t0 = time.perf_counter()
    common = {"pad_token_id": pad_token_id, "eos_token_ids": eos_token_ids}
    split: dict[str, list] = {"train": [], "val": []}
    docs: dict[str, dict[str, list[str]]] = {}
    for dataset, prompts in prompt_sets.items():
        fit_ids, _ = split_documents(prompts["doc_id"].tolist(), fit_fraction, split_seed)
        if len(fit_ids) < 2:
            raise ValueError(f"{dataset}: the fit half has {len(fit_ids)} document(s); the head needs >= 2 "
                             "(train and validation documents); raise entropy.n_samples or fit_fraction")
        train_ids, val_ids = split_documents(fit_ids, 1 - float(s["val_fraction"]), split_seed)
        docs[dataset] = {"train": train_ids, "val": val_ids}
        for part, ids in (("train", train_ids), ("val", val_ids)):
            split[part] += head_sequences(model, prompts, ids, n_steps=s["n_steps"], seed=seed,
                                          samples_per_prompt=samples_per_prompt, **common)
    pairs = {part: label_pairs(model, seqs, s, seed=seed, batch_size=batch_size, **common)
             for part, seqs in split.items()}
    t1 = time.perf_counter()
    tr, va = pairs["train"], pairs["val"]
    head = FutureHead.like(model)
    hist = fit_head(head, tr["hidden"], tr["cand"], tr["rollout"], epochs=s["epochs"], lr=float(s["lr"]),
                    l2=float(s["l2"]), val=(va["hidden"], va["cand"], va["rollout"]))
    t2 = time.perf_counter()
    pred = head_values(head, va["hidden"], va["cand"])
    const = np.full_like(va["rollout"], tr["rollout"].mean())
    record = {"settings": s, "fit_fraction": fit_fraction, "split_seed": split_seed, "seed": seed, "documents": docs,
              "n_contexts": {p: len(v["hidden"]) for p, v in pairs.items()},
              "n_pairs": {p: int(v["cand"].size) for p, v in pairs.items()},
              "n_sequences": {p: {src: sum(q["source"] == src for q in seqs) for src in _SOURCES}
                              for p, seqs in split.items()},
              "train_mse": hist["train_mse"], "val_mse": hist["val_mse"],
              "history_stride": max(1, s["epochs"] // 50),  # every stride-th Adam step of the histories below
              "train_mse_history": hist["train_mse_history"][:: max(1, s["epochs"] // 50)],
              "val_mse_history": hist["val_mse_history"][:: max(1, s["epochs"] // 50)],
              "val_rmse_vs_rollout": _rmse(pred, va["rollout"]),
              "val_rmse_vs_lookahead": _rmse(pred, va["lookahead"]),
              "val_rmse_constant_vs_rollout": _rmse(const, va["rollout"]),
              "val_rmse_rollout_vs_lookahead": _rmse(va["rollout"], va["lookahead"]),
              "label_mean": float(tr["rollout"].mean()), "label_std": float(tr["rollout"].std()),
              "head": head.describe(),
              "wall_s": {"labels": t1 - t0, "training": t2 - t1}}
    return head, record


def run_head_training(model_dir: str | os.PathLike, prompt_files: Sequence[str], head_out: str, record_out: str,
                      **kw) -> dict[str, Any]:
    """Job entry: train one model's head on the fit halves of every dataset in ``prompt_files``
    (``.../data~<d>.parquet``); writes the safetensors head and its JSON record."""
    from lmcal.core.paths import output_key
    from lmcal.lm.future_head import save_head
    from lmcal.lm.padding import pad_token_id
    from lmcal.models.store import load_model, load_model_info

    model, tok = load_model(model_dir)
    info = load_model_info(model_dir)
    sets = {output_key(p)[0]: pd.read_parquet(p) for p in prompt_files if str(p).endswith(".parquet")}
    head, record = train_head(model, sets, pad_token_id=pad_token_id(tok), eos_token_ids=info.eos_token_ids, **kw)
    record = {"model": info.name, "datasets": sorted(sets), **record}
    save_head(head, head_out, metadata={"model": info.name, "settings": record["settings"]})
    io.write_json(record, record_out)
    return record
