"""Small Llama models built from scratch: construction, language-model training and held-out evaluation.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from lmcal.core import io


def build_llama(vocab_size: int, hidden_size: int, n_layers: int, n_heads: int,
                intermediate_size: int | None = None, max_position: int = 2048, n_kv_heads: int | None = None,
                tie_embeddings: bool = True, seed: int = 0, eos_token_id: int | None = None,
                pad_token_id: int | None = None):
    """A small LlamaForCausalLM, initialised deterministically from ``seed``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if hidden_size % n_heads:
        raise ValueError(f"hidden_size ({hidden_size}) must be divisible by n_heads ({n_heads})")
    # SwiGLU width 8/3·d rounded up to a multiple of 8, as in Llama.
    inter = intermediate_size or int(8 * math.ceil(8 * hidden_size / 3 / 8))
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=inter, num_hidden_layers=n_layers,
        num_attention_heads=n_heads, num_key_value_heads=n_kv_heads or n_heads,
        max_position_embeddings=max_position, tie_word_embeddings=tie_embeddings, rms_norm_eps=1e-5,
        eos_token_id=eos_token_id, bos_token_id=eos_token_id, pad_token_id=pad_token_id,
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


def lr_at(step: int, steps: int, lr: float, warmup_steps: int, min_lr_ratio: float = 0.1) -> float:
    """Linear warmup then cosine decay to ``min_lr_ratio * lr``."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    frac = (step - warmup_steps) / max(1, steps - warmup_steps)
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def _save_checkpoint(model, opt, step: int, history: dict, ckpt_dir: Path) -> None:
    state = {f"model.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    scalars: dict[str, Any] = {"step": step, "history": history, "param_groups": []}
    for gi, group in enumerate(opt.param_groups):
        scalars["param_groups"].append({k: v for k, v in group.items() if k != "params"})
        for pi, p in enumerate(group["params"]):
            for k, v in opt.state.get(p, {}).items():
                if torch.is_tensor(v):
                    state[f"opt.{gi}.{pi}.{k}"] = v.detach().clone().contiguous()
    with io.atomic_path(ckpt_dir / "checkpoint.safetensors") as tmp:
        save_file(state, str(tmp))
    io.write_json(scalars, ckpt_dir / "checkpoint.json")  # written last: its presence marks a complete checkpoint


def _load_checkpoint(model, opt, ckpt_dir: Path) -> tuple[int, dict]:
    scalars = json.loads((ckpt_dir / "checkpoint.json").read_text())
    state = load_file(str(ckpt_dir / "checkpoint.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")}, strict=False)
    for gi, group in enumerate(opt.param_groups):
        group.update(scalars["param_groups"][gi])
        for pi, p in enumerate(group["params"]):
            prefix = f"opt.{gi}.{pi}."
            entries = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if entries:
                opt.state[p] = entries
    return int(scalars["step"]), scalars["history"]


def train_lm(model, train_ids: np.ndarray, *, steps: int, batch_size: int, seq_len: int, lr: float,
             warmup_steps: int = 0, seed: int = 0, weight_decay: float = 0.1, grad_clip: float = 1.0,
             eval_ids: np.ndarray | None = None, eval_every: int | None = None, eval_tokens: int | None = 32768,
             checkpoint_dir: str | Path | None = None, checkpoint_every: int | None = None,
             on_checkpoint: Callable[[int, Any], None] | None = None, progress: bool = True) -> dict:
    """Train a causal LM on random windows of a token stream with AdamW; resumable from ``checkpoint_dir``.

    Batches are drawn from a generator seeded with (seed, step), so a resumed run sees exactly the batches an
    uninterrupted run would. Returns the history: step, train_loss, lr, eval_loss (at eval points), tokens/s.
    """
    if len(train_ids) < seq_len + 2:
        raise ValueError(f"train_ids has {len(train_ids)} tokens, need more than seq_len + 1 = {seq_len + 1}")
    if steps < 1 or batch_size < 1 or seq_len < 1:
        raise ValueError("steps, batch_size and seq_len must be positive")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.95),
    )
    history: dict[str, list] = {"step": [], "train_loss": [], "lr": [], "eval_step": [], "eval_loss": []}
    start = 0
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    if ckpt is not None and (ckpt / "checkpoint.json").exists():
        start, history = _load_checkpoint(model, opt, ckpt)
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
        if ckpt is not None and (last or (checkpoint_every and (step + 1) % checkpoint_every == 0)):
            _save_checkpoint(model, opt, step + 1, history, ckpt)
            if on_checkpoint is not None:
                on_checkpoint(step + 1, model)
    elapsed = time.perf_counter() - t0
    history["tokens_per_s"] = tokens / elapsed if elapsed > 0 else float("nan")
    history["train_tokens"] = steps * batch_size * seq_len
    model.eval()
    return history
