"""Chunked label-smoothed linear cross-entropy in plain PyTorch (CPU and GPU).

The N x V logits never exist: the forward walks the vocabulary in chunks of ``chunk_size`` columns, keeping an
online log-sum-exp, the target logit and the logit sum per row (all fp32); the backward recomputes each chunk's
logits from the saved hidden states and weight plus the per-row lse. Extra memory is O(N x chunk_size) for
one chunk of fp32 logits plus O(N x D) for the hidden gradient accumulator.
"""

from __future__ import annotations

import torch

from .common import (
    Rows,
    backward_by_vocab_chunks,
    gemm_dtype,
    mm_f32,
    reduce_rows,
    row_grad_scale,
)

CHUNK_BYTES = 1 << 27  # 128 MiB of fp32 logits per chunk: big enough for efficient GEMMs, small next to N x V


def default_chunk_size(n_rows: int, vocab: int, bytes_per_logit: int = 4, budget: int = CHUNK_BYTES) -> int:
    """Vocabulary columns per chunk so that one (n_rows, chunk) buffer stays near ``budget`` bytes."""
    cols = budget // max(1, n_rows * bytes_per_logit)
    cols = max(128, cols // 128 * 128)
    return min(vocab, cols)


def chunk_logits(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, c0: int, c1: int
) -> torch.Tensor:
    """fp32 logits hidden @ weight[c0:c1].T + bias[c0:c1] of one vocabulary chunk, shape (n, c1 - c0).

    ``hidden`` must already be in ``gemm_dtype`` (upcast once by the caller, not once per chunk).
    """
    z = mm_f32(hidden, weight[c0:c1].to(hidden.dtype).t())
    if bias is not None:
        z += bias[c0:c1].float()
    return z


def target_columns(targets: torch.Tensor, c0: int, c1: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(whether each row's target lies in [c0, c1), its column inside the chunk clamped into range)."""
    inside = (targets >= c0) & (targets < c1)
    return inside, (targets - c0).clamp_(0, c1 - c0 - 1)


def forward_by_vocab_chunks(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    label_smoothing: float,
    softcap: float | None,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (lse, loss) in fp32 nats for rows whose targets are all valid class ids.

    loss_b = lse_b - (1 - beta) z_{b,y} - (beta / V) sum_j z_{bj}, with z soft-capped when ``softcap`` is set.
    """
    n, vocab = hidden.shape[0], weight.shape[0]
    dev = hidden.device
    hidden = hidden.to(gemm_dtype(hidden))
    run_max = torch.full((n,), float("-inf"), device=dev)
    run_sum = torch.zeros(n, device=dev)
    z_target = torch.zeros(n, device=dev)
    z_total = torch.zeros(n, device=dev)
    for c0 in range(0, vocab, chunk_size):
        c1 = min(c0 + chunk_size, vocab)
        z = chunk_logits(hidden, weight, bias, c0, c1)
        if softcap is not None:
            z.div_(softcap).tanh_().mul_(softcap)
        z_total += z.sum(1)
        inside, col = target_columns(targets, c0, c1)
        z_target += torch.where(inside, z.gather(1, col[:, None]).squeeze(1), 0.0)
        new_max = torch.maximum(run_max, z.amax(1))
        run_sum = run_sum * torch.exp(run_max - new_max) + z.sub_(new_max[:, None]).exp_().sum(1)
        run_max = new_max
        del z
    lse = run_max + run_sum.log()
    loss = lse - (1.0 - label_smoothing) * z_target - (label_smoothing / vocab) * z_total
    return lse, loss


def grad_logits_chunk(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    lse: torch.Tensor,
    scale: torch.Tensor,
    label_smoothing: float,
    softcap: float | None,
    c0: int,
    c1: int,
) -> torch.Tensor:
    """dL/dz for columns c0..c1: scale_b * (p_bj - beta/V - (1 - beta) 1[j = y_b]) * dcap/dz, recomputed.

    ``hidden`` is in ``gemm_dtype``; the result has that dtype too, ready for the gradient GEMMs.
    """
    vocab = weight.shape[0]
    z = chunk_logits(hidden, weight, bias, c0, c1)
    cap_grad = None
    if softcap is not None:
        t = z.div_(softcap).tanh_()
        cap_grad = torch.square(t).neg_().add_(1.0)  # d(s tanh(z/s))/dz = 1 - tanh^2
        z = t.mul_(softcap)
    g = z.sub_(lse[:, None]).exp_().sub_(label_smoothing / vocab)
    inside, col = target_columns(targets, c0, c1)
    g.scatter_add_(1, col[:, None], (inside.float() * -(1.0 - label_smoothing))[:, None])
    if cap_grad is not None:
        g.mul_(cap_grad)
    g.mul_(scale[:, None])
    return g.to(hidden.dtype)


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Autograd function over flattened (N, D) hidden states; see ``lmcal.losses.linear_cross_entropy``."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, label_smoothing, ignore_index, softcap, reduction, chunk_size):
        rows = Rows.select(hidden, targets, ignore_index)
        chunk = chunk_size or default_chunk_size(rows.n_valid, weight.shape[0])
        lse, row_loss = forward_by_vocab_chunks(
            rows.hidden, weight, bias, rows.targets, label_smoothing, softcap, chunk
        )
        ctx.save_for_backward(rows.hidden, weight, bias, rows.targets, lse, rows.index)
        ctx.options = (label_smoothing, softcap, reduction, chunk, targets.numel())
        return reduce_rows(row_loss, rows, reduction, hidden.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        h, weight, bias, targets, lse, index = ctx.saved_tensors
        label_smoothing, softcap, reduction, chunk, n_rows = ctx.options
        rows = Rows(h, targets, index, n_rows)
        scale = row_grad_scale(grad_output, rows, reduction)
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2])
        h_op = h.to(gemm_dtype(h))

        def grad_chunk(c0: int, c1: int) -> torch.Tensor:
            return grad_logits_chunk(h_op, weight, bias, targets, lse, scale, label_smoothing, softcap, c0, c1)

        d_hidden, d_weight, d_bias = backward_by_vocab_chunks(h_op, weight, bias, needs, chunk, grad_chunk)
        if d_hidden is not None:
            d_hidden = rows.scatter(d_hidden.to(h.dtype))
        return d_hidden, d_weight, d_bias, None, None, None, None, None, None
