"""The materialised reference loss and the input checks every implementation shares.

Everything here is plain PyTorch: the N x V logits exist in memory. It is the semantics the memory-efficient
implementations must reproduce, and the path the SFT trainer takes when the kernel switch is off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

REDUCTIONS = ("mean", "sum", "none")


def apply_softcap(logits: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """Gemma-2 style logit capping z -> s * tanh(z / s); identity when ``softcap`` is None."""
    if softcap is None:
        return logits
    return softcap * torch.tanh(logits / softcap)


def label_smoothed_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    *,
    softcap: float | None = None,
) -> torch.Tensor:
    """Label-smoothed cross-entropy (nats) on materialised ``logits`` of shape (..., V).

    A thin wrapper over ``F.cross_entropy`` that accepts any leading shape: the target distribution is
    (1 - beta) * onehot + beta / V, rows whose target is ``ignore_index`` are excluded (loss 0 under
    ``reduction="none"``, which returns ``targets.shape``).
    """
    check_options(label_smoothing, softcap, reduction)
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} do not match")
    loss = F.cross_entropy(
        apply_softcap(logits, softcap).reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )
    return loss.reshape(targets.shape) if reduction == "none" else loss


def linear_cross_entropy_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    softcap: float | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """``label_smoothed_cross_entropy(hidden @ weight.T + bias)``: O(N x V) memory, autograd does the rest."""
    logits = F.linear(hidden, weight, bias)
    return label_smoothed_cross_entropy(
        logits, targets, label_smoothing, ignore_index, reduction, softcap=softcap
    )


def check_options(label_smoothing: float, softcap: float | None, reduction: str) -> None:
    """Raise ValueError for an out-of-range smoothing, a non-positive softcap or an unknown reduction."""
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    if softcap is not None and not float(softcap) > 0.0:
        raise ValueError(f"softcap must be None or > 0, got {softcap}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def check_linear_inputs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None,
    ignore_index: int,
) -> None:
    """Shapes, dtypes, devices and target range of a linear cross-entropy call; ValueError names the argument."""
    if weight.dim() != 2:
        raise ValueError(f"weight must be (V, D), got shape {tuple(weight.shape)}")
    if hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"hidden last dim {hidden.shape[-1]} != weight dim {weight.shape[1]} (weight is V x D)")
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and targets {tuple(targets.shape)} do not match")
    if not hidden.is_floating_point() or hidden.dtype != weight.dtype:
        raise ValueError(f"hidden ({hidden.dtype}) and weight ({weight.dtype}) must share one float dtype")
    if targets.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"targets must be int64 or int32, got {targets.dtype}")
    if hidden.device != weight.device or targets.device != hidden.device:
        raise ValueError("hidden, weight and targets must be on one device")
    if bias is not None:
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
        if bias.device != hidden.device or not bias.is_floating_point():
            raise ValueError("bias must be a float tensor on the device of hidden")
    vocab = weight.shape[0]
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= vocab))
    if bool(bad.any()):
        raise ValueError(f"targets must be in [0, {vocab}) or equal ignore_index={ignore_index}")
