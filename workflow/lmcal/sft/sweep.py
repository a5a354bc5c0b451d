"""One SFT run of the sweep: its instruction data, its trainer config, and the fine-tune itself.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

# ------------------------------------------------------------------------------------------- one run


def build_data(spec: dict, eval_items: pd.DataFrame | None = None) -> pd.DataFrame:
    """Instruction conversations for one data spec (as ``data_spec`` resolves it), avoiding ``eval_items``."""
    from lmcal.data import instructions as sft_data

    return sft_data.build_instruction_data({k: v for k, v in spec.items() if k != "evalset"}, eval_items)


def sft_config(run: dict) -> Any:
    from lmcal.sft.train import SFTConfig

    return SFTConfig(lr=run["lr"], label_smoothing=run["label_smoothing"], seed=run["seed"], **run["train"])


def run_sft(base_dir: str | Path, conversations: pd.DataFrame, run: dict, out_dir: str | Path, *,
            checkpoint_dir: str | Path | None = None, fingerprint_inputs: dict | None = None,
            keep_checkpoint: bool = False,
            progress: bool = True) -> tuple[Any, dict, dict]:
    """Fine-tune the model in ``base_dir`` as ``run`` says and save it (weights, tokenizer, model_info.json).

    Returns (ModelInfo, history, metrics); metrics hold Δ*, V, D, V/D, the realised logit gaps on a held-back
    batch of training examples before and after, and throughput.
    """
    import torch

    from lmcal.data import instructions as sft_data
    from lmcal.models import store as models
    from lmcal.sft import train as sft

    # One device: CUDA when present (fp32 weights and AdamW state; multi-GPU sharding is not implemented).
    model, tok = models.load_model(base_dir, device="cuda" if torch.cuda.is_available() else "cpu")
    base_info = models.load_model_info(base_dir)
    template = sft_data.PlainTemplate(**run["plain_template"]) if run.get("plain_template") else None
    examples = sft_data.encode_dataset(tok, conversations, template=template, max_length=run.get("max_length"),
                                       use_chat_template=run.get("use_chat_template"))
    cfg = sft_config(run)
    probe = sft_data.collate(examples[:32], tok.pad_token_id)
    gap_before = sft.logit_gap_stats(model, probe)
    history = sft.train_sft(model, examples, cfg, pad_id=tok.pad_token_id, checkpoint_dir=checkpoint_dir,
                            fingerprint_inputs=fingerprint_inputs,
                            progress=progress)
    gap_after = sft.logit_gap_stats(model, probe)
    vocab, hidden = int(model.config.vocab_size), int(model.config.hidden_size)
    delta = sft.optimal_logit_gap(run["label_smoothing"], vocab)
    metrics = {"delta_star": delta if math.isfinite(delta) else None, "vocab_size": vocab, "hidden_size": hidden,
               "v_over_d": vocab / hidden, "n_examples": len(examples), "steps": history["steps"],
               "final_loss": history["loss"][-1], "first_loss": history["loss"][0],
               "tokens_per_s": history["tokens_per_s"] if math.isfinite(history["tokens_per_s"]) else None,
               "gap_mean_before": gap_before["gap_mean"], "gap_mean_after": gap_after["gap_mean"],
               "gap_max_before": gap_before["gap_max"], "gap_max_after": gap_after["gap_max"]}
    extra = {"base": run["base"], "base_n_params_non_embedding": base_info.n_params_non_embedding,
             "label_smoothing": run["label_smoothing"], "lr": run["lr"], "seed": run["seed"], "data": run["data"],
             **{f"train.{k}": v for k, v in run["train"].items()}, **metrics}
    info = models.describe(model, tok, name=run["name"], source="sft", origin=str(base_dir), revision=None,
                           extra=extra)
    models.save_model_dir(model.cpu(), tok, info, out_dir)
    if checkpoint_dir is not None and not keep_checkpoint:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # only needed to resume; the model is saved now
    return info, history, metrics
