"""Tokenizers and token streams: byte-level BPE training, document tokenisation, the hash-based
document split and the safetensors token-stream files a ladder or V/D cell trains on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from safetensors.numpy import load_file, save_file  # numpy, not torch: tokenizer jobs never import torch

from lmcal.core import io
from lmcal.data import splits

SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>"]


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2):
    """Byte-level BPE trained with the `tokenizers` library, wrapped as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be >= {256 + len(SPECIAL_TOKENS)} for byte-level BPE, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<|pad|>"
    )


def tokenize_documents(tokenizer, texts: Iterable[str]) -> np.ndarray:
    """Concatenate documents into one int32 stream, each followed by EOS (documents never run together)."""
    eos = tokenizer.eos_token_id
    chunks = [np.asarray(ids + [eos], dtype=np.int32) for ids in tokenizer(list(texts))["input_ids"]]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int32)


def split_documents(doc_ids: list[str], eval_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out documents, chosen by a seeded hash of the id (stable under reordering)."""
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    return splits.held_out_mask(doc_ids, eval_fraction, seed)


def save_token_streams(path: str | Path, **streams: np.ndarray) -> None:
    with io.atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v, dtype=np.int32) for k, v in streams.items()}, str(tmp))


def load_token_streams(path: str | Path) -> dict[str, np.ndarray]:
    from lmcal.models.store import check_safetensors

    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no token-stream file")
    check_safetensors(path)  # a truncated file names itself instead of "invalid header length"
    return load_file(str(path))


# ---- pipeline steps (called by workflow/scripts; kept here so they are tested) ----

def build_tokenizer_and_streams(documents: list, vocab_size: int, tokenizer_chars: int, eval_fraction: float,
                                seed: int, train_only: list[bool] | None = None):
    """Train the ladder tokenizer on the first ``tokenizer_chars`` characters of each corpus, then tokenize
    every document into a train and a held-out stream (held-out documents chosen by id hash).

    ``documents`` is a list of DataFrames (doc_id, text), one per corpus; ``train_only[i]`` puts every document of
    corpus i in the train stream (the fact corpus: the held-out loss stays natural text only).
    Returns (tokenizer, streams, manifest).
    """
    train_only = [False] * len(documents) if train_only is None else [bool(t) for t in train_only]
    if len(train_only) != len(documents):
        raise ValueError(f"train_only: expected one flag per corpus ({len(documents)}), got {len(train_only)}")
    sample = []
    for docs in documents:
        budget = tokenizer_chars
        for text in docs["text"]:
            sample.append(text[:budget])
            budget -= len(sample[-1])
            if budget <= 0:
                break
    tok = train_bpe_tokenizer(sample, vocab_size)
    import pandas as pd

    all_docs = pd.concat([d.assign(_train_only=t) for d, t in zip(documents, train_only)], ignore_index=True)
    held = split_documents(list(all_docs["doc_id"]), eval_fraction, seed) & ~all_docs["_train_only"].to_numpy(bool)
    train = tokenize_documents(tok, all_docs.loc[~held, "text"])
    evals = tokenize_documents(tok, all_docs.loc[held, "text"])
    manifest = {"vocab_size": len(tok), "train_tokens": int(len(train)), "eval_tokens": int(len(evals)),
                "train_docs": int((~held).sum()), "eval_docs": int(held.sum()),
                "train_only_docs": int(all_docs["_train_only"].sum()),
                "chars_per_token": float(all_docs["text"].str.len().sum() / max(1, len(train) + len(evals)))}
    return tok, {"train": train, "eval": evals}, manifest
