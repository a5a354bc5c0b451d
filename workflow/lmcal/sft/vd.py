"""The V/D study: does label smoothing help less as vocabulary size V grows relative to hidden size D?

A controlled grid: byte-level BPE tokenizers at several V trained on the same documents, tiny Llama models at
several D pretrained on the same token budget with the lead's ``lmcal.ladder`` trainer, then SFT at each β on the
same instruction data and evaluated on the same multiple-choice set. Each (V, D) cell is one job that runs every
seed in turn (``run_seeds``; one job per seed would pay the ~9 core-s of torch/transformers imports per seed):
per seed, pretrain, evaluate the base model, fine-tune and evaluate once per β. The result per model is its
calibration, the LS-optimal logit gap Δ* = ln(1 + (1 − β) V / β) next to the gap the model realises, and the
option-renormalised confidence it reaches next to the bound the LS target implies; the analysis across cells
(benefit ECE(β=0) − ECE(β) against ln(V/D), its bootstrap interval, claims) is ``lmcal.sft.vd_analysis``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path

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
    """Calibration metrics and reliability table with the calibration study's protocol (``mcq``), plus the mean
    and max option-renormalised confidence and the number of options (the most common count over items)."""
    from lmcal.calibration import mcq

    scored, metrics, table = mcq.evaluate_calibration(model, tokenizer, items, progress=False, **settings)
    conf = scored["conf"].to_numpy(float)
    n_choices = int(scored["probs"].map(len).mode().iloc[0])
    return {**{k: float(metrics[k]) for k in METRICS}, "conf_mean": float(conf.mean()),
            "conf_max": float(conf.max()), "n_choices": n_choices}, table


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
    """Pretrain one (V, D) model with ``seed``, then evaluate it and its SFT at each β (same seed).

    ``run`` is an SFT run dict (``lmcal.sft_sweep``: lr, train settings, plain_template, max_length).
    Returns (rows, reliability): one row per model (base, then each β) with V, D, seed, sizes, Δ*, realised
    logit gap, calibration metrics, the mean / max option-renormalised confidence and the bound the LS target
    puts on it (``vd_analysis.confidence_bound``; 1 for the base and β = 0); reliability tables stacked with the
    same keys. The seed is part of every checkpoint fingerprint, so two seeds never resume each other's state.
    """
    from lmcal.core import paths
    from lmcal.data import instructions as sft_data
    from lmcal.models import store as models
    from lmcal.sft import sweep
    from lmcal.sft import train as sft
    from lmcal.sft.vd_analysis import confidence_bound

    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    fingerprint_inputs = {**(fingerprint_inputs or {}), "seed": int(seed)}
    base, hist = pretrain(tokenizer, streams, hidden, arch, pretrain_cfg, seed,
                          ckpt / "pretrain" if ckpt else None, fingerprint_inputs)
    vocab = int(base.config.vocab_size)
    total, non_emb = models.count_parameters(base)
    common = {"vocab_size": vocab, "hidden_size": hidden, "seed": int(seed), "v_over_d": vocab / hidden,
              "n_params": total, "n_params_non_embedding": non_emb, "pretrain_loss": float(hist["eval_loss"][-1])}
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
                     "conf_bound": confidence_bound(beta or 0.0, vocab, metrics["n_choices"]),
                     "gap_mean": gap["gap_mean"], "gap_max": gap["gap_max"], **extra})
        tables.append(table.assign(**{k: v for k, v in key.items() if k in ("kind", "label_smoothing",
                                                                            "vocab_size", "hidden_size", "seed")}))

    record(base, "base", None, {})
    for beta in label_smoothing:
        model = copy.deepcopy(base)
        cfg = sweep.sft_config({**run, "label_smoothing": float(beta), "seed": seed})
        h = sft.train_sft(model, examples, cfg, pad_id=tokenizer.pad_token_id,
                          checkpoint_dir=ckpt / f"sft-b{paths.fmt_num(beta)}" if ckpt else None,
                          fingerprint_inputs=fingerprint_inputs)
        record(model, "sft", float(beta), {"sft_final_loss": h["loss"][-1], "sft_steps": h["steps"]})
    return pd.DataFrame(rows), pd.concat(tables, ignore_index=True)


def seed_checkpoint_dir(checkpoint_dir: str | Path | None, seed: int) -> Path | None:
    """``{checkpoint_dir}/s{seed}``: each seed's pretraining and SFT checkpoints live apart (and their
    fingerprints hold the seed), so a resumed cell job continues every seed where it stopped."""
    return Path(checkpoint_dir) / f"s{int(seed)}" if checkpoint_dir else None


def run_seeds(tokenizer, streams: dict[str, np.ndarray], conversations: pd.DataFrame, items: pd.DataFrame, *,
              seeds: Sequence[int], checkpoint_dir: str | Path | None = None,
              **cell) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``run_cell`` once per seed (same tokenizer, streams, data and items), rows and reliability stacked."""
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: need at least one seed and no repeats, got {seeds}")
    out = [run_cell(tokenizer, streams, conversations, items, seed=s,
                    checkpoint_dir=seed_checkpoint_dir(checkpoint_dir, s), **cell) for s in seeds]
    return (pd.concat([r for r, _ in out], ignore_index=True), pd.concat([t for _, t in out], ignore_index=True))
