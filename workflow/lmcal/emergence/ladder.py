"""The task ladder: tiny Llamas trained on the synthetic task mixture, with snapshots as extra ladder points.

Training itself is the shared ``lmcal.models.llama.train_lm`` (resumable); this module only builds the
models, the character-level token streams and the model directory layout::

    results/emergence/models/size~{size}/seed~{seed}/          final weights, tokenizer, model_info.json,
                                                               history.json
    results/emergence/models/size~{size}/seed~{seed}/step~{k}/ snapshot after k optimiser steps (k < steps)

Resume state lives in a separate work directory (Snakemake deletes a rule's output directory before a rerun):
train_lm's checkpoint, resumed only under the settings it was written with (``lmcal.models.checkpoint``), and
the snapshots, each written before the checkpoint of its step, so a checkpoint implies its snapshots exist.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lmcal.core import io

SNAPSHOT_PREFIX = "step~"


@dataclasses.dataclass
class TrainSettings:
    """Optimisation settings shared by every rung (tokens per step = batch_size · seq_len characters)."""

    steps: int = 400
    batch_size: int = 32
    seq_len: int = 64
    lr: float = 3e-3
    warmup_steps: int = 40
    checkpoint_every: int = 50
    snapshot_steps: list[int] = dataclasses.field(default_factory=lambda: [50, 100, 200])
    eval_every: int = 100

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "seq_len", "checkpoint_every", "eval_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        for k in self.snapshot_steps:
            if not 0 < k < self.steps or k % self.checkpoint_every:
                raise ValueError(
                    f"snapshot_steps: {k} must be in (0, steps={self.steps}) and a multiple of "
                    f"checkpoint_every={self.checkpoint_every}"
                )


def token_stream(tokenizer, texts) -> np.ndarray:
    """Documents → one int32 stream, EOS after each document (``lmcal.models.tokenizers.tokenize_documents``)."""
    from lmcal.models.tokenizers import tokenize_documents

    return tokenize_documents(tokenizer, list(texts))


def build_rung(size: dict[str, Any], vocab_size: int, seed: int, max_position: int, tokenizer):
    """A LlamaForCausalLM for one ladder size (keys hidden, layers, heads; ``name`` is ignored), from seed."""
    from lmcal.models.llama import build_llama

    return build_llama(size, vocab_size=vocab_size, max_position=max_position, seed=seed,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def train_rung(
    size: dict[str, Any],
    seed: int,
    train_texts: pd.Series,
    heldout_texts: pd.Series,
    settings: TrainSettings,
    out_dir: str | Path,
    work_dir: str | Path,
    max_position: int = 512,
    progress: bool = True,
) -> dict:
    """Train one (size, seed) rung and write its model directory; returns the training history.

    The history (``lmcal.models.llama.train_lm``) gains ``snapshots``: {step: held-out CE in nats/char} for each
    snapshot and the final model, measured on the whole held-out stream prefix train_lm evaluates.
    """
    from transformers.utils import logging as hf_logging

    from lmcal.emergence.chartok import build_char_tokenizer
    from lmcal.models.checkpoint import tokenizer_digest
    from lmcal.models.llama import evaluate_lm, train_lm
    from lmcal.models.store import MODEL_INFO, describe, save_model_dir

    hf_logging.disable_progress_bar()  # no "Writing model shards" bar per snapshot in the log
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    tok = build_char_tokenizer()
    train_ids, heldout_ids = token_stream(tok, train_texts), token_stream(tok, heldout_texts)
    model = build_rung(size, len(tok), seed, max_position, tok)
    # train_lm fingerprints its own settings, the model and the streams; the rung settings add the snapshot
    # schedule, so a checkpoint is never resumed past a snapshot step this run asks for but never wrote.
    inputs = {"rung": dataclasses.asdict(settings), "size": dict(size), "tokenizer": tokenizer_digest(tok)}
    name = f"{size.get('name', 'rung')}-seed{seed}"
    snapshots: dict[int, float] = {}

    def save_snapshot(step: int, m) -> None:
        if step in settings.snapshot_steps:
            snapshots[step] = evaluate_lm(m, heldout_ids, settings.seq_len, max_tokens=32768)
            m.train()
            info = describe(
                m,
                tok,
                name=f"{name}-step{step}",
                source="local",
                origin=str(out_dir),
                revision=None,
                extra={"step": step, "seed": seed, "size": size.get("name")},
            )
            save_model_dir(m, tok, info, work_dir / f"{SNAPSHOT_PREFIX}{step}")
            io.write_json(
                {"heldout_ce": snapshots[step]}, work_dir / f"{SNAPSHOT_PREFIX}{step}" / "heldout.json"
            )

    history = train_lm(
        model,
        train_ids,
        steps=settings.steps,
        batch_size=settings.batch_size,
        seq_len=settings.seq_len,
        lr=settings.lr,
        warmup_steps=settings.warmup_steps,
        seed=seed,
        eval_ids=heldout_ids,
        eval_every=settings.eval_every,
        checkpoint_dir=work_dir,
        checkpoint_every=settings.checkpoint_every,
        fingerprint_inputs=inputs,
        on_checkpoint=save_snapshot,
        progress=progress,
    )
    # Snapshots written before an interruption were evaluated in the earlier process: re-read them.
    for k in settings.snapshot_steps:
        if k not in snapshots:
            snapshots[k] = io.read_json(work_dir / f"{SNAPSHOT_PREFIX}{k}" / "heldout.json")["heldout_ce"]
    snapshots[settings.steps] = history["eval_loss"][-1]
    history["snapshots"] = {str(k): v for k, v in sorted(snapshots.items())}
    info = describe(
        model,
        tok,
        name=name,
        source="local",
        origin=str(out_dir),
        revision=None,
        extra={"step": settings.steps, "seed": seed, "size": size.get("name")},
    )
    with io.atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        io.write_json(dataclasses.asdict(info), tmp / MODEL_INFO)
        for k in settings.snapshot_steps:
            shutil.copytree(work_dir / f"{SNAPSHOT_PREFIX}{k}", tmp / f"{SNAPSHOT_PREFIX}{k}")
        io.write_json(history, tmp / "history.json")
    shutil.rmtree(work_dir, ignore_errors=True)
    return history


def list_snapshots(model_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, directory) of every snapshot and the final model of a rung directory, by step."""
    model_dir = Path(model_dir)
    history = io.read_json(model_dir / "history.json")
    final = int(max(history["step"]) + 1)
    found = [(int(p.name[len(SNAPSHOT_PREFIX) :]), p) for p in model_dir.glob(f"{SNAPSHOT_PREFIX}*")]
    return sorted(found) + [(final, model_dir)]


def heldout_ce(model_dir: str | Path) -> dict[int, float]:
    """{step: held-out CE (nats per character)} recorded at training time."""
    history = io.read_json(Path(model_dir) / "history.json")
    return {int(k): float(v) for k, v in history["snapshots"].items()}
