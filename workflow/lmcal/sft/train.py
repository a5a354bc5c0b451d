"""Supervised fine-tuning with label smoothing: the loss, a resumable AdamW loop, and the LS capacity diagnostic.

Loss (the reference repo's ``finetune-working.py``): ``F.cross_entropy(z, y, label_smoothing=beta)`` over response
tokens, whose target is q = (1 - beta) onehot(y) + beta / V. Ablation knobs, applied in this order:
training temperature z -> z / T, then logit softcap z -> s tanh(z / s). The reference code also multiplies
the loss by T (which rescales the gradients, i.e. the effective learning rate); here that is the explicit
option ``temperature_loss_multiplier`` (default off) and is logged with every run.

Loss implementations (``loss_impl``): ``torch`` materialises the logits with the model's own forward (the
reference semantics); ``chunked``/``triton``/``auto`` feed the final hidden states and the LM head to
``lmcal.losses.linear_cross_entropy``, which never holds the N x V logits.

Reduction (``reduce_loss``): ``mean`` divides the summed token losses of an optimizer step by the number of
response tokens in the whole step (all accumulation micro-batches); ``sum`` leaves the sum (the paper's setting,
so the gradient scale grows with the tokens per step).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lmcal.data.instructions import IGNORE_INDEX, collate
from lmcal.losses.reference import apply_softcap
from lmcal.models import checkpoint as ckpt_lib
from lmcal.models.schedules import get_schedule

LOSS_IMPLS = ("torch", "chunked", "triton", "auto")
REDUCTIONS = ("mean", "sum")


def optimal_logit_gap(label_smoothing: float, vocab_size: int) -> float:
    """Δ* = ln(1 + (1 - β) V / β) (nats): the target-vs-rest logit gap that minimises the LS loss.

    At the optimum p_y = 1 - β + β/V and p_j = β/V for j ≠ y, so z_y - z_j = ln(p_y / p_j). Infinite at β = 0
    (plain cross-entropy keeps pushing the gap up). If a model cannot realise a gap of Δ*, the LS term never
    binds and LS behaves like CE.
    """
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing: expected a value in [0, 1], got {label_smoothing}")
    if vocab_size < 2:
        raise ValueError(f"vocab_size: expected >= 2, got {vocab_size}")
    if label_smoothing == 0.0:
        return math.inf
    return math.log1p((1.0 - label_smoothing) * vocab_size / label_smoothing)


def transform_logits(logits: torch.Tensor, temperature: float = 1.0, softcap: float | None = None) -> torch.Tensor:
    """Training-time logit transform: z / T, then s * tanh(z / s) when ``softcap`` is set."""
    if temperature <= 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    if softcap is not None and softcap <= 0:
        raise ValueError(f"softcap: expected None or > 0, got {softcap}")
    if temperature != 1.0:
        logits = logits / temperature
    return apply_softcap(logits, softcap)


@dataclass
class SFTConfig:
    """One SFT run's settings (every field is logged)."""

    lr: float = 2e-5
    label_smoothing: float = 0.0
    seed: int = 0
    epochs: float = 2.0
    max_steps: int | None = None  # overrides epochs when set
    batch_size: int = 8  # examples per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    warmup_ratio: float = 0.03
    lr_schedule: str = "linear"  # a name in lmcal.models.schedules.SCHEDULES
    weight_decay: float = 0.0
    max_grad_norm: float | None = None  # None: no clipping (open-instruct's default)
    reduce_loss: str = "mean"
    loss_impl: str = "torch"
    temperature: float = 1.0
    temperature_loss_multiplier: bool = False  # the reference code's loss * T
    softcap: float | None = None
    checkpoint_every: int | None = None  # steps; None: only at the end
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr: expected > 0, got {self.lr}")
        if not 0.0 <= self.label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing: expected a value in [0, 1], got {self.label_smoothing}")
        if self.reduce_loss not in REDUCTIONS:
            raise ValueError(f"reduce_loss: expected one of {REDUCTIONS}, got {self.reduce_loss!r}")
        if self.loss_impl not in LOSS_IMPLS:
            raise ValueError(f"loss_impl: expected one of {LOSS_IMPLS}, got {self.loss_impl!r}")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch_size and grad_accum: expected >= 1")
        if self.max_steps is None and self.epochs <= 0:
            raise ValueError(f"epochs: expected > 0, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps: expected None or >= 1, got {self.max_steps}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio: expected a value in [0, 1), got {self.warmup_ratio}")
        transform_logits(torch.zeros(1), self.temperature, self.softcap)  # validates both
        get_schedule(self.lr_schedule)  # validates the name
        self.adam_betas = tuple(self.adam_betas)


# ------------------------------------------------------------------------------------------------- loss


def _model_softcap(model) -> float | None:
    return getattr(model.config, "final_logit_softcapping", None)


def response_loss(model, batch: dict[str, torch.Tensor], cfg: SFTConfig) -> tuple[torch.Tensor, int]:
    """Summed label-smoothed CE (nats) over the batch's response tokens, and their count.

    Position t predicts token t + 1, so logits[:, :-1] are scored against labels[:, 1:].
    """
    labels = batch["labels"][:, 1:]
    n_tokens = int((labels != IGNORE_INDEX).sum())
    if cfg.loss_impl == "torch":
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        z = transform_logits(logits.float(), cfg.temperature, cfg.softcap)
        loss = F.cross_entropy(z.reshape(-1, z.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX,
                               label_smoothing=cfg.label_smoothing, reduction="sum")
    else:
        from lmcal.losses import linear_cross_entropy

        for attr in ("logit_scale", "logits_scaling"):
            if getattr(model.config, attr, None) not in (None, 1, 1.0):
                raise ValueError(f"loss_impl: {cfg.loss_impl!r} does not apply the model's {attr}; use 'torch'")
        cap = cfg.softcap
        if _model_softcap(model) is not None:
            if cap is not None:
                raise ValueError("softcap: the model caps its logits already; stacking a second cap needs "
                                 "loss_impl='torch'")
            if cfg.temperature != 1.0:
                raise ValueError("temperature: with the model's own softcap it needs loss_impl='torch'")
            cap = float(_model_softcap(model))
        hidden = model.get_decoder()(input_ids=batch["input_ids"],
                                     attention_mask=batch["attention_mask"]).last_hidden_state[:, :-1]
        head = model.get_output_embeddings()
        weight, bias = head.weight, getattr(head, "bias", None)
        if cfg.temperature != 1.0:  # (h W^T + b) / T == h (W / T)^T + b / T
            weight = weight / cfg.temperature
            bias = None if bias is None else bias / cfg.temperature
        loss = linear_cross_entropy(hidden, weight, labels, bias=bias, label_smoothing=cfg.label_smoothing,
                                    ignore_index=IGNORE_INDEX, softcap=cap, reduction="sum", impl=cfg.loss_impl)
    if cfg.temperature_loss_multiplier:
        loss = loss * cfg.temperature
    return loss, n_tokens


@torch.no_grad()
def logit_gap_stats(model, batch: dict[str, torch.Tensor], rows: int = 4) -> dict[str, float]:
    """Realised target-vs-rest logit gaps on response tokens (logit units, comparable with Δ*).

    ``gap_mean``: mean over tokens of z_y - mean_{j≠y} z_j (the quantity LS drives to Δ*);
    ``gap_max``: mean of z_y - max_{j≠y} z_j (negative when the target is not the argmax).
    ``rows`` sequences run at a time: a 32-sequence probe's logits at V = 262k would take GBs at once.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    mean_gaps, max_gaps = [], []
    for a in range(0, batch["input_ids"].shape[0], rows):
        logits = model(input_ids=batch["input_ids"][a:a + rows].to(device),
                       attention_mask=batch["attention_mask"][a:a + rows].to(device)).logits[:, :-1]
        labels = batch["labels"][a:a + rows, 1:].to(device)
        keep = labels != IGNORE_INDEX
        z, y = logits[keep].float(), labels[keep]
        del logits
        zy = z.gather(1, y[:, None]).squeeze(1)
        mean_gaps.append(zy - (z.sum(1) - zy) / (z.shape[1] - 1))
        max_gaps.append(zy - z.scatter(1, y[:, None], float("-inf")).max(1).values)
    model.train(was_training)
    mean_gap, max_gap = torch.cat(mean_gaps), torch.cat(max_gaps)
    return {"gap_mean": float(mean_gap.mean()), "gap_max": float(max_gap.mean()), "n_tokens": int(mean_gap.numel())}


# ---------------------------------------------------------------------------------------------- schedule


def total_steps(n_examples: int, cfg: SFTConfig) -> int:
    """Optimizer steps of a run: ``max_steps``, or ``epochs`` passes of ceil(n / (batch_size * grad_accum))."""
    if cfg.max_steps is not None:
        return int(cfg.max_steps)
    per_epoch = math.ceil(n_examples / (cfg.batch_size * cfg.grad_accum))
    return max(1, math.ceil(cfg.epochs * per_epoch))


def step_examples(step: int, n_examples: int, per_step: int, seed: int) -> np.ndarray:
    """Example indices of optimizer step ``step``: consecutive slices of a seeded per-epoch permutation.

    A pure function of (step, seed), so a resumed run sees exactly the batches an uninterrupted run would.
    The last slice of an epoch may be short.
    """
    per_epoch = math.ceil(n_examples / per_step)
    epoch, j = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n_examples)
    return order[j * per_step : (j + 1) * per_step]


# ------------------------------------------------------------------------------------------- checkpoints

# Settings that do not change the result, so changing them keeps a checkpoint valid.
NOT_FINGERPRINTED = ("checkpoint_every",)


def checkpoint_spec(model, examples: Sequence[dict], cfg: SFTConfig, pad_id: int, inputs: dict | None) -> dict:
    """What a train_sft checkpoint must agree on to be resumed: settings, the base model (config and weights),
    the encoded examples, the pad id, and the caller's ``inputs``."""
    settings = {k: v for k, v in asdict(cfg).items() if k not in NOT_FINGERPRINTED}
    return {"trainer": "lmcal.sft.train.train_sft", "settings": settings, "model": ckpt_lib.model_spec(model),
            "data": {"examples": ckpt_lib.examples_digest(examples), "pad_id": pad_id}, "inputs": inputs or {}}


# ------------------------------------------------------------------------------------------------ training


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def make_optimizer(model, cfg: SFTConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                             weight_decay=cfg.weight_decay, betas=cfg.adam_betas, eps=cfg.adam_eps)


def train_sft(model, examples: Sequence[dict], cfg: SFTConfig, *, pad_id: int,
              checkpoint_dir: str | Path | None = None, fingerprint_inputs: dict | None = None,
              on_step: Callable[[int, dict], None] | None = None, progress: bool = True) -> dict:
    """Fine-tune ``model`` in place on encoded ``examples`` ({"input_ids", "labels"}); resumable.

    With ``checkpoint_dir`` and ``cfg.checkpoint_every``, a checkpoint is written every ``checkpoint_every`` steps
    and at the end, and a call that finds one written under the same settings, base weights, examples and
    ``fingerprint_inputs`` continues from it (same batches, schedule, optimizer state and RNG), so a killed job
    resumes to the same final weights; a checkpoint written otherwise is deleted and training starts over.
    ``on_step(step, record)`` runs after each optimizer step.
    Returns the history: per step ``loss`` (mean nats per response token, before any ×T), ``lr``,
    ``grad_norm``, ``tokens``; plus ``tokens_per_s`` and ``steps``.
    """
    if not examples:
        raise ValueError("examples: empty training set")
    torch.manual_seed(cfg.seed)
    device = next(model.parameters()).device
    steps = total_steps(len(examples), cfg)
    warmup = math.ceil(cfg.warmup_ratio * steps)
    per_step = cfg.batch_size * cfg.grad_accum
    opt = make_optimizer(model, cfg)
    history: dict[str, list] = {"step": [], "loss": [], "lr": [], "grad_norm": [], "tokens": []}
    lr_at = get_schedule(cfg.lr_schedule)
    # No checkpoint_every: no checkpoints at all (a 135M model's weights + Adam state are 1.6 GB per write).
    use_ckpt = checkpoint_dir is not None and bool(cfg.checkpoint_every)
    spec = checkpoint_spec(model, examples, cfg, pad_id, fingerprint_inputs) if use_ckpt else None
    checkpointer, start, history = ckpt_lib.open_checkpoint(checkpoint_dir if use_ckpt else None, spec, model, opt,
                                                            history)
    model.train()
    t0, seen = time.perf_counter(), 0
    for step in tqdm(range(start, steps), desc="sft", disable=not progress, initial=start, total=steps):
        idx = step_examples(step, len(examples), per_step, cfg.seed)
        micro = [_to(collate([examples[i] for i in idx[k : k + cfg.batch_size]], pad_id), device)
                 for k in range(0, len(idx), cfg.batch_size)]
        n_step = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro)
        lr = lr_at(step, steps, cfg.lr, warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for b in micro:
            loss, _ = response_loss(model, b, cfg)
            scaled = loss / n_step if cfg.reduce_loss == "mean" else loss
            scaled.backward()
            total += float(loss.detach())
        params = [p for p in model.parameters() if p.grad is not None]
        if cfg.max_grad_norm:
            gnorm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
        else:
            gnorm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
        opt.step()
        seen += sum(int(b["attention_mask"].sum()) for b in micro)
        mult = cfg.temperature if cfg.temperature_loss_multiplier else 1.0
        record = {"step": step + 1, "loss": total / max(1, n_step) / mult, "lr": lr, "grad_norm": gnorm,
                  "tokens": n_step}
        for k in ("step", "loss", "lr", "grad_norm", "tokens"):
            history[k].append(record[k])
        last = step + 1 == steps
        if checkpointer is not None and (last or (step + 1) % cfg.checkpoint_every == 0):
            checkpointer.save(model, opt, step + 1, history)
        if on_step is not None:
            on_step(step + 1, record)
    elapsed = time.perf_counter() - t0
    model.eval()
    return {**history, "steps": steps, "warmup_steps": warmup,
            "tokens_per_s": seen / elapsed if elapsed > 0 and seen else float("nan")}
