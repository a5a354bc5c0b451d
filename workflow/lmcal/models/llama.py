"""Small Llama models built from scratch: construction, language-model training and held-out evaluation.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from lmcal.models import checkpoint as ckpt_lib
from lmcal.models.schedules import get_schedule


ARCH_KEYS = ("hidden", "layers", "heads")  # required; optional: intermediate, kv_heads, tie_embeddings
OPTIONAL_ARCH_KEYS = ("intermediate", "kv_heads", "tie_embeddings")
NON_ARCH_KEYS = ("name", "lr")  # allowed in a config's size entry, not used to build the model


def build_llama(arch: dict, *, vocab_size: int, max_position: int = 2048, seed: int = 0,
                eos_token_id: int | None = None, pad_token_id: int | None = None):
    """A small LlamaForCausalLM for ``arch`` ({hidden, layers, heads} and optionally intermediate, kv_heads,
    tie_embeddings; the config spelling), initialised deterministically from ``seed``.

    The one way every study builds a from-scratch model (ladder, emergence task ladder, V/D study)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    missing = [k for k in ARCH_KEYS if k not in arch]
    unknown = sorted(set(arch) - set(ARCH_KEYS) - set(OPTIONAL_ARCH_KEYS) - set(NON_ARCH_KEYS))
    if missing or unknown:
        raise ValueError(f"arch: missing {missing} / unknown {unknown} in {arch!r}; expected keys {ARCH_KEYS} "
                         f"and optionally {OPTIONAL_ARCH_KEYS}")
    hidden, layers, heads = int(arch["hidden"]), int(arch["layers"]), int(arch["heads"])
    if hidden % heads:
        raise ValueError(f"arch: hidden ({hidden}) must be divisible by heads ({heads})")
    # SwiGLU width 8/3·d rounded up to a multiple of 8, as in Llama.
    inter = int(arch.get("intermediate") or 8 * math.ceil(8 * hidden / 3 / 8))
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=int(arch.get("kv_heads") or heads),
        max_position_embeddings=max_position, tie_word_embeddings=bool(arch.get("tie_embeddings", True)),
        rms_norm_eps=1e-5, eos_token_id=eos_token_id, bos_token_id=eos_token_id, pad_token_id=pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def _batch(stream: np.ndarray, starts: np.ndarray, seq_len: int) -> torch.Tensor:
    idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
    return torch.from_numpy(stream[idx].astype(np.int64))


@torch.no_grad()
def evaluate_lm(model, eval_ids: np.ndarray, seq_len: int, batch_size: int = 16,
                max_tokens: int | None = None) -> float:
    """Mean next-token cross-entropy (nats) over non-overlapping windows of ``eval_ids``."""
    model.eval()
    n_windows = (len(eval_ids) - 1) // seq_len
    if max_tokens:
        n_windows = min(n_windows, max(1, max_tokens // seq_len))
    if n_windows < 1:
        raise ValueError(f"eval_ids has {len(eval_ids)} tokens, fewer than one window of {seq_len + 1}")
    starts = np.arange(n_windows) * seq_len
    total, count = 0.0, 0
    for i in range(0, n_windows, batch_size):
        x = _batch(eval_ids, starts[i : i + batch_size], seq_len)
        logits = model(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten(), reduction="sum")
        total += loss.item()
        count += x[:, 1:].numel()
    return total / count


def train_lm(model, train_ids: np.ndarray, *, steps: int, batch_size: int, seq_len: int, lr: float,
             warmup_steps: int = 0, schedule: str = "cosine", seed: int = 0, weight_decay: float = 0.1,
             grad_clip: float = 1.0, eval_ids: np.ndarray | None = None, eval_every: int | None = None,
             eval_tokens: int | None = 32768, checkpoint_dir: str | Path | None = None,
             checkpoint_every: int | None = None, fingerprint_inputs: dict | None = None,
             on_checkpoint: Callable[[int, Any], None] | None = None, progress: bool = True) -> dict:
    """Train a causal LM on random windows of a token stream with AdamW; resumable from ``checkpoint_dir``.

    Batches are drawn from a generator seeded with (seed, step), so a resumed run sees exactly the batches an
    uninterrupted run would. A checkpoint is resumed only if it was written with the same settings, model
    (config and initial weights), token streams and ``fingerprint_inputs`` (what the caller knows besides,
    e.g. a tokenizer digest); otherwise it is deleted and training starts over (``lmcal.models.checkpoint``).
    ``on_checkpoint(step, model)`` runs at each checkpoint step *before* the checkpoint is written, so whatever
    it saves exists whenever a checkpoint at or past that step does.
    Returns the history: step, train_loss, lr, eval_loss (at eval points), tokens/s.
    """
    if len(train_ids) < seq_len + 2:
        raise ValueError(f"train_ids has {len(train_ids)} tokens, need more than seq_len + 1 = {seq_len + 1}")
    if steps < 1 or batch_size < 1 or seq_len < 1:
        raise ValueError("steps, batch_size and seq_len must be positive")
    lr_at = get_schedule(schedule)
    betas = (0.9, 0.95)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=betas,
    )
    history: dict[str, list] = {"step": [], "train_loss": [], "lr": [], "eval_step": [], "eval_loss": []}
    spec = None
    if checkpoint_dir is not None:
        settings = dict(steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr, warmup_steps=warmup_steps,
                        schedule=schedule, seed=seed, weight_decay=weight_decay, grad_clip=grad_clip, betas=betas,
                        eval_every=eval_every, eval_tokens=eval_tokens)
        spec = {"trainer": "lmcal.models.llama.train_lm", "settings": settings, "model": ckpt_lib.model_spec(model),
                "data": {"train_ids": ckpt_lib.array_digest(train_ids), "eval_ids": ckpt_lib.array_digest(eval_ids)},
                "inputs": fingerprint_inputs or {}}
    checkpointer, start, history = ckpt_lib.open_checkpoint(checkpoint_dir, spec, model, opt, history)
    model.train()
    t0, tokens = time.perf_counter(), 0
    high = len(train_ids) - seq_len - 1
    for step in tqdm(range(start, steps), desc="train", disable=not progress, initial=start, total=steps):
        rng = np.random.default_rng([seed, step])
        x = _batch(train_ids, rng.integers(0, high, size=batch_size), seq_len)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup_steps)
        logits = model(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        tokens += x[:, :-1].numel()
        history["step"].append(step)
        history["train_loss"].append(float(loss.item()))
        history["lr"].append(opt.param_groups[0]["lr"])
        last = step + 1 == steps
        if eval_ids is not None and (last or (eval_every and (step + 1) % eval_every == 0)):
            history["eval_step"].append(step + 1)
            history["eval_loss"].append(evaluate_lm(model, eval_ids, seq_len, max_tokens=eval_tokens))
            model.train()
        if checkpointer is not None and (last or (checkpoint_every and (step + 1) % checkpoint_every == 0)):
            if on_checkpoint is not None:
                on_checkpoint(step + 1, model)
            checkpointer.save(model, opt, step + 1, history)
    elapsed = time.perf_counter() - t0
    history["tokens_per_s"] = tokens / elapsed if elapsed > 0 else float("nan")
    history["train_tokens"] = steps * batch_size * seq_len
    model.eval()
    return history
