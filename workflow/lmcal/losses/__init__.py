"""Label-smoothed cross-entropy of a linear head without materialising the N x V logits.

``linear_cross_entropy(hidden, weight, targets, ...)`` equals
``F.cross_entropy(softcap(hidden @ weight.T + bias), targets, ignore_index=..., label_smoothing=beta,
reduction=...)`` in value and gradients, with three implementations behind ``impl``:

- ``"chunked"``: plain PyTorch over vocabulary chunks (CPU or GPU), memory O(N x chunk_size + N x D);
- ``"triton"``: fused Triton kernels (CUDA; CPU only under ``TRITON_INTERPRET=1``);
- ``"torch"``: the materialised reference (``label_smoothed_cross_entropy`` on the full logits);
- ``"auto"``: Triton on a CUDA tensor when triton is importable, else chunked.

Importing this package never imports triton.
"""

from __future__ import annotations

import importlib.util

import torch

from .chunked import ChunkedLinearCrossEntropy
from .reference import (
    apply_softcap,
    check_linear_inputs,
    check_options,
    label_smoothed_cross_entropy,
    linear_cross_entropy_reference,
)

IMPLS = ("auto", "chunked", "triton", "torch")

__all__ = [
    "IMPLS",
    "apply_softcap",
    "label_smoothed_cross_entropy",
    "linear_cross_entropy",
    "linear_cross_entropy_reference",
    "resolve_impl",
    "triton_available",
]


def triton_available() -> bool:
    """Whether the triton package can be imported (it is not imported here)."""
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # a blocked or half-imported triton
        return False


def resolve_impl(impl: str, device: torch.device) -> str:
    """The implementation ``impl`` stands for on ``device`` ("auto" -> "triton" on CUDA with triton, else "chunked")."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "chunked"
    if impl == "triton":
        if not triton_available():
            raise ValueError("impl='triton' needs the triton package (pip install lmcal[gpu])")
        from .triton_kernel import interpreting

        if device.type != "cuda" and not interpreting():
            raise ValueError("impl='triton' needs CUDA tensors, or TRITON_INTERPRET=1 set before triton is imported")
    return impl


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    softcap: float | None = None,
    reduction: str = "mean",
    impl: str = "auto",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Label-smoothed cross-entropy (nats) of the linear head ``hidden @ weight.T + bias``.

    Args:
        hidden: (..., D) final hidden states; float32, bfloat16 or float16 (same dtype as ``weight``).
        weight: (V, D) classifier (the LM head / tied embedding).
        targets: (...) class ids in [0, V), or ``ignore_index`` for rows that do not count.
        bias: optional (V,) bias.
        label_smoothing: beta in [0, 1]; the target distribution is (1 - beta) onehot + beta / V.
        ignore_index: target value of rows excluded from the loss and its normaliser.
        softcap: if set, logits z become softcap * tanh(z / softcap) before the loss (Gemma-2).
        reduction: "mean" over non-ignored rows (NaN if there are none, as in torch), "sum", or "none"
            (shape of ``targets``, 0 for ignored rows).
        impl: "auto", "chunked", "triton" or "torch" (see the module docstring).
        chunk_size: vocabulary columns per chunk (chunked forward and backward, Triton backward); None picks
            one from a fixed memory budget.

    Reductions accumulate in fp32 whatever the input dtype; the loss comes back in ``hidden.dtype`` and each
    gradient in its input's dtype.
    """
    check_options(label_smoothing, softcap, reduction)
    check_linear_inputs(hidden, weight, targets, bias, ignore_index)
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be None or a positive int, got {chunk_size}")
    impl = resolve_impl(impl, hidden.device)
    beta = float(label_smoothing)
    cap = None if softcap is None else float(softcap)
    if impl == "torch":
        return linear_cross_entropy_reference(
            hidden, weight, targets, bias=bias, label_smoothing=beta, ignore_index=ignore_index,
            softcap=cap, reduction=reduction,
        )
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    flat_targets = targets.reshape(-1)
    if impl == "chunked":
        loss = ChunkedLinearCrossEntropy.apply(
            flat_hidden, weight, bias, flat_targets, beta, ignore_index, cap, reduction, chunk_size
        )
    else:
        from .triton_kernel import TritonLinearCrossEntropy

        loss = TritonLinearCrossEntropy.apply(
            flat_hidden, weight, bias, flat_targets, beta, ignore_index, cap, reduction, chunk_size, None
        )
    return loss.reshape(targets.shape) if reduction == "none" else loss
