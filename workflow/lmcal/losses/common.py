"""Pieces the chunked and Triton implementations share: row compaction, reductions and fp32 matmuls."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# (op, device type) -> whether the op's half-in / fp32-out overload works there; learnt on first use.
_OUT_DTYPE_OK: dict[tuple[str, str], bool] = {}


@dataclass
class Rows:
    """The rows of a flattened (N, D) problem whose target is not ``ignore_index``.

    Ignored rows contribute nothing to the loss or the gradients, so both implementations drop them before any
    matmul (SFT masks the prompt, often a third of the tokens or more) and scatter back at the end.
    """

    hidden: torch.Tensor  # (n_valid, D), the kept rows
    targets: torch.Tensor  # (n_valid,) int64
    index: torch.Tensor | None  # (n_valid,) positions of the kept rows in 0..N-1; None when all rows are kept
    n_rows: int  # N

    @classmethod
    def select(cls, hidden: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> Rows:
        keep = targets != ignore_index
        if bool(keep.all()):
            return cls(hidden, targets.long(), None, targets.numel())
        index = keep.nonzero().squeeze(1)
        return cls(hidden.index_select(0, index), targets.index_select(0, index).long(), index, targets.numel())

    @property
    def n_valid(self) -> int:
        return self.targets.numel()

    def scatter(self, values: torch.Tensor) -> torch.Tensor:
        """Place per-kept-row ``values`` (n_valid, ...) into zeros of shape (N, ...)."""
        if self.index is None:
            return values
        out = values.new_zeros((self.n_rows, *values.shape[1:]))
        return out.index_copy_(0, self.index, values)


def reduce_rows(row_loss: torch.Tensor, rows: Rows, reduction: str, out_dtype: torch.dtype) -> torch.Tensor:
    """Reduce fp32 per-kept-row losses like ``F.cross_entropy``: mean over kept rows (NaN when none), sum, none."""
    if reduction == "none":
        return rows.scatter(row_loss).to(out_dtype)
    total = row_loss.sum()
    if reduction == "mean":
        total = total / rows.n_valid  # 0 / 0 = NaN when every row is ignored, as torch gives
    return total.to(out_dtype)


def row_grad_scale(grad_output: torch.Tensor, rows: Rows, reduction: str) -> torch.Tensor:
    """d(loss)/d(row loss) for each kept row, fp32 (n_valid,)."""
    g = grad_output.float()
    if reduction == "none":
        g = g.reshape(-1)
        return g if rows.index is None else g.index_select(0, rows.index)
    if reduction == "mean":
        g = g / max(rows.n_valid, 1)
    return g.expand(rows.n_valid)


def gemm_dtype(tensor: torch.Tensor) -> torch.dtype:
    """Operand dtype of the big GEMMs: half precision stays half on CUDA (fp32 accumulation inside cuBLAS),
    everything else runs in fp32 (CPU half-precision GEMMs would round their outputs)."""
    if tensor.is_cuda and tensor.dtype in (torch.bfloat16, torch.float16):
        return tensor.dtype
    return torch.float32


def mm_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` in fp32 for operands of one dtype (fp32, or bf16/fp16 accumulated in fp32).

    CUDA has a half-precision GEMM with an fp32 output (``torch.mm(a, b, torch.float32)``) that avoids upcasting
    the operands; elsewhere the operands are upcast, which copies them but never builds an N x V tensor.
    """
    if a.dtype == torch.float32 and b.dtype == torch.float32:
        return torch.mm(a, b)
    if _out_dtype_ok("mm", a):
        try:
            return torch.mm(a, b, torch.float32)
        except (RuntimeError, TypeError, NotImplementedError):
            _OUT_DTYPE_OK["mm", a.device.type] = False
    return torch.mm(a.float(), b.float())


def addmm_f32_(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``acc += a @ b`` in place for an fp32 ``acc``, without an fp32 copy of half-precision operands on CUDA."""
    if a.dtype == torch.float32 and b.dtype == torch.float32:
        return acc.addmm_(a, b)
    if _out_dtype_ok("addmm", a):
        try:
            return torch.addmm(acc, a, b, torch.float32, out=acc)
        except (RuntimeError, TypeError, NotImplementedError):
            _OUT_DTYPE_OK["addmm", a.device.type] = False
    return acc.add_(mm_f32(a, b))


def _out_dtype_ok(op: str, a: torch.Tensor) -> bool:
    return a.is_cuda and _OUT_DTYPE_OK.get((op, a.device.type), True)


def backward_by_vocab_chunks(
    h_op: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    needs: tuple[bool, bool, bool],
    chunk_size: int,
    grad_logits_chunk,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients w.r.t. (hidden, weight, bias) from per-chunk logit gradients G[:, c0:c1].

    ``h_op`` is the (n, D) hidden states in ``gemm_dtype``. The hidden gradient comes back as its fp32
    accumulator (the caller casts it once the chunk buffers are freed, so the two never coexist); the weight and
    bias gradients in their parameters' dtypes.
    ``grad_logits_chunk(c0, c1)`` returns dL/dz for vocabulary columns c0..c1 of every row as an (n, c1 - c0)
    tensor of ``h_op.dtype``. Walking the vocabulary (not the rows) means each slice dW[c0:c1] = G^T H
    is one GEMM over all rows, written once in the weight dtype with fp32 accumulation inside the GEMM, so no
    V x D fp32 accumulator is needed; only dH (n x D) accumulates across chunks, in fp32.
    """
    need_h, need_w, need_b = needs
    op = h_op.dtype
    vocab = weight.shape[0]
    d_hidden = torch.zeros(h_op.shape, dtype=torch.float32, device=h_op.device) if need_h else None
    d_weight = torch.empty_like(weight) if need_w else None
    d_bias = torch.empty(vocab, dtype=torch.float32, device=h_op.device) if need_b else None
    for c0 in range(0, vocab, chunk_size):
        c1 = min(c0 + chunk_size, vocab)
        g = grad_logits_chunk(c0, c1)
        if need_w:
            if d_weight.dtype == op:
                torch.mm(g.t(), h_op, out=d_weight[c0:c1])
            else:
                d_weight[c0:c1] = torch.mm(g.t(), h_op)
        if need_h:
            addmm_f32_(d_hidden, g, weight[c0:c1].to(op))
        if need_b:
            torch.sum(g, 0, dtype=torch.float32, out=d_bias[c0:c1])
        del g
    if d_bias is not None:
        d_bias = d_bias.to(bias.dtype)
    return d_hidden, d_weight, d_bias
