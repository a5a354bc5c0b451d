"""The V/D study: does label smoothing help less as vocabulary size V grows relative to hidden size D?

A controlled grid: byte-level BPE tokenizers at several V trained on the same documents, tiny Llama models at
several D pretrained on the same token budget with the lead's ``lmcal.ladder`` trainer, then SFT at each β on the
same instruction data and evaluated on the same multiple-choice set. Each cell (V, D) is one job: pretrain,
evaluate the base model, fine-tune and evaluate once per β. The result per cell is ECE(β=0) − ECE(β) and the
LS-optimal logit gap Δ* = ln(1 + (1 − β) V / β) next to the gap the model actually realises.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lmcal.calibration.metrics import SCORES as METRICS  # a cell reports every calibration metric


def cells(vocab_sizes: Sequence[int], hidden_sizes: Sequence[int]) -> list[tuple[int, int]]:
    """The (V, D) grid, V-major."""
    if not vocab_sizes or not hidden_sizes:
        raise ValueError("vocab_sizes and hidden_sizes: need at least one value each")
    return [(int(v), int(d)) for v in vocab_sizes for d in hidden_sizes]


def select_documents(documents: Sequence[pd.DataFrame], corpus_chars: int) -> list[pd.DataFrame]:
    """The first documents of each corpus (dataset order) until ``corpus_chars`` characters are reached.

    The pretraining budget is a few hundred thousand tokens, so tokenizing whole corpora would be wasted time.
    """
    if corpus_chars < 1:
        raise ValueError(f"corpus_chars: expected >= 1, got {corpus_chars}")
    out = []
    for docs in documents:
        cum = docs["text"].str.len().cumsum()
        out.append(docs[(cum - docs["text"].str.len()) < corpus_chars].reset_index(drop=True))
    return out


def evaluate(model, tokenizer, items: pd.DataFrame, settings: dict) -> tuple[dict, pd.DataFrame]:
    """Calibration metrics and reliability table with the calibration study's protocol (``mcq``)."""
    from lmcal.calibration import mcq

    _, metrics, table = mcq.evaluate_calibration(model, tokenizer, items, progress=False, **settings)
    return {k: float(metrics[k]) for k in METRICS}, table


def pretrain(tokenizer, streams: dict[str, np.ndarray], hidden: int, arch: dict, train: dict, seed: int,
             checkpoint_dir: str | Path | None = None, fingerprint_inputs: dict | None = None):
    """A tiny Llama (``lmcal.models.llama.build_llama``) pretrained with ``train_lm``; (model, history).

    Its checkpoint resumes only under the same settings, streams, tokenizer and ``fingerprint_inputs``."""
    from lmcal.models import llama
    from lmcal.models.checkpoint import tokenizer_digest

    model = llama.build_llama({**arch, "hidden": hidden}, vocab_size=len(tokenizer),
                              max_position=max(512, int(train["seq_len"])), seed=seed,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    steps = int(train["steps"])
    history = llama.train_lm(model, streams["train"], steps=steps, batch_size=int(train["batch_size"]),
                             seq_len=int(train["seq_len"]), lr=float(train["lr"]),
                             warmup_steps=int(train["warmup_steps"]), schedule="cosine", seed=seed,
                             eval_ids=streams["eval"], eval_every=steps,
                             eval_tokens=int(train.get("eval_tokens", 16384)), checkpoint_dir=checkpoint_dir,
                             checkpoint_every=max(1, steps // 4),
                             fingerprint_inputs={"tokenizer": tokenizer_digest(tokenizer),
                                                 **(fingerprint_inputs or {})}, progress=True)
    return model, history


def run_cell(tokenizer, streams: dict[str, np.ndarray], conversations: pd.DataFrame, items: pd.DataFrame, *,
             hidden: int, arch: dict, pretrain_cfg: dict, run: dict, label_smoothing: Sequence[float],
             eval_settings: dict, seed: int, checkpoint_dir: str | Path | None = None,
             fingerprint_inputs: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pretrain one (V, D) model, then evaluate it and its SFT at each β.

    ``run`` is an SFT run dict (``lmcal.sft_sweep``: lr, train settings, plain_template, max_length).
    Returns (rows, reliability): one row per model (base, then each β) with V, D, sizes, Δ*, realised logit gap
    and calibration metrics; reliability tables stacked with the same keys.
    """
    from lmcal.core import paths
    from lmcal.data import instructions as sft_data
    from lmcal.models import store as models
    from lmcal.sft import sweep
    from lmcal.sft import train as sft

    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    base, hist = pretrain(tokenizer, streams, hidden, arch, pretrain_cfg, seed,
                          ckpt / "pretrain" if ckpt else None, fingerprint_inputs)
    vocab = int(base.config.vocab_size)
    total, non_emb = models.count_parameters(base)
    common = {"vocab_size": vocab, "hidden_size": hidden, "v_over_d": vocab / hidden, "n_params": total,
              "n_params_non_embedding": non_emb, "pretrain_loss": float(hist["eval_loss"][-1])}
    template = sft_data.PlainTemplate(**run["plain_template"]) if run.get("plain_template") else None
    examples = sft_data.encode_dataset(tokenizer, conversations, template=template, max_length=run.get("max_length"),
                                       use_chat_template=run.get("use_chat_template"))
    probe = sft_data.collate(examples[:32], tokenizer.pad_token_id)
    rows, tables = [], []

    def record(model, kind: str, beta: float | None, extra: dict) -> None:
        metrics, table = evaluate(model, tokenizer, items, eval_settings)
        gap = sft.logit_gap_stats(model, probe)
        delta = sft.optimal_logit_gap(beta, vocab) if beta else math.inf
        key = {"kind": kind, "label_smoothing": beta, **common}
        rows.append({**key, **metrics, "delta_star": delta if math.isfinite(delta) else None,
                     "gap_mean": gap["gap_mean"], "gap_max": gap["gap_max"], **extra})
        tables.append(table.assign(**{k: v for k, v in key.items() if k in ("kind", "label_smoothing",
                                                                            "vocab_size", "hidden_size")}))

    record(base, "base", None, {})
    for beta in label_smoothing:
        model = copy.deepcopy(base)
        cfg = sweep.sft_config({**run, "label_smoothing": float(beta), "seed": seed})
        h = sft.train_sft(model, examples, cfg, pad_id=tokenizer.pad_token_id,
                          checkpoint_dir=ckpt / f"sft-b{paths.fmt_num(beta)}" if ckpt else None,
                          fingerprint_inputs=fingerprint_inputs)
        record(model, "sft", float(beta), {"sft_final_loss": h["loss"][-1], "sft_steps": h["steps"]})
    return pd.DataFrame(rows), pd.concat(tables, ignore_index=True)


def vd_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (V, D, β > 0): ECE of base, SFT with CE (β=0) and with LS, and the LS reduction ECE(0) − ECE(β)."""
    sft_rows = rows[rows["kind"] == "sft"]
    keys = ["vocab_size", "hidden_size"]
    ce = sft_rows[sft_rows["label_smoothing"] == 0.0].set_index(keys)
    base = rows[rows["kind"] == "base"].set_index(keys)
    out = []
    for beta, ls in sft_rows[sft_rows["label_smoothing"] > 0].groupby("label_smoothing"):
        ls = ls.set_index(keys)
        joined = ls.join(ce, suffixes=("", "_ce"), how="inner").join(base[["ece", "accuracy"]], suffixes=("", "_base"))
        out.append(pd.DataFrame({
            "label_smoothing": beta, "v_over_d": joined["v_over_d"], "n_params_non_embedding":
            joined["n_params_non_embedding"], "pretrain_loss": joined["pretrain_loss"],
            "accuracy_base": joined["accuracy_base"], "accuracy_ce": joined["accuracy_ce"],
            "accuracy_ls": joined["accuracy"], "ece_base": joined["ece_base"], "ece_ce": joined["ece_ce"],
            "ece_ls": joined["ece"], "ece_reduction": joined["ece_ce"] - joined["ece"],
            "delta_star": joined["delta_star"], "gap_mean_ce": joined["gap_mean_ce"],
            "gap_mean_ls": joined["gap_mean"]}).reset_index())
    if not out:
        raise ValueError("rows: need SFT rows at β = 0 and at some β > 0")
    return pd.concat(out, ignore_index=True).sort_values(["label_smoothing", "v_over_d"]).reset_index(drop=True)


def vd_findings(table: pd.DataFrame) -> dict[str, Any]:
    """Spearman correlation of the LS ECE reduction with V/D (the claim: negative), per β."""
    from scipy.stats import spearmanr

    out = {}
    for beta, grp in table.groupby("label_smoothing"):
        entry: dict[str, Any] = {"n_cells": len(grp),
                                 "mean_ece_reduction": float(grp["ece_reduction"].mean()),
                                 "n_reduced": int((grp["ece_reduction"] > 0).sum())}
        if grp["v_over_d"].nunique() >= 3:
            rho, p = spearmanr(grp["v_over_d"], grp["ece_reduction"])
            entry.update({"spearman_v_over_d": float(rho), "spearman_p": float(p)})
        out[f"{float(beta):g}"] = entry
    return out
