"""Fused Triton kernels for label-smoothed linear cross-entropy (CUDA, or CPU under ``TRITON_INTERPRET=1``).

Forward: each program owns a block of rows and a contiguous run of vocabulary tiles. It computes each
BLOCK_N x BLOCK_V logit tile with ``tl.dot`` over D in registers and folds it into an online max / sum-exp, the
target logit and the logit sum; the tile never reaches memory. Per-(split, row) partials are merged in PyTorch
(O(splits x N) floats). Padded columns are masked out of every reduction, rows past N are masked on store, and
the soft-cap is applied once, to the tile, before the reductions.

Backward: for one vocabulary chunk at a time, a kernel recomputes the logit tiles and writes the scaled logit
gradient G[:, chunk] in the input dtype; two cuBLAS GEMMs then give dW[chunk] = G^T H (written once) and
dH += G W[chunk] (fp32 accumulator). No atomics, no spin locks, no grid-wide barrier.

Importing this module needs triton; ``lmcal.losses`` imports it only when the Triton path is asked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .common import (
    Rows,
    backward_by_vocab_chunks,
    gemm_dtype,
    reduce_rows,
    row_grad_scale,
)

GRAD_CHUNK_MAX_BYTES = 1 << 28  # cap of the (n, chunk) logit-gradient buffer for very many rows


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1`` set before import)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@dataclass(frozen=True)
class KernelConfig:
    """Tile sizes and launch settings of both kernels."""

    block_n: int = 128
    block_v: int = 256
    block_d: int = 64
    num_warps: int = 8
    num_stages: int = 3


def default_config(dtype: torch.dtype) -> KernelConfig:
    """Tiles for H100-class GPUs in half precision; smaller ones for exact fp32 and for the interpreter.

    128 x 256 x 64 with 8 warps and 3 stages was the fastest of seven configs for both kernels on an H100 at
    (D, V) = (2048, 128256) and (2304, 256000), N = 8192, bf16 (``python -m lmcal.losses.tune --parts``).
    """
    if interpreting():
        return KernelConfig(block_n=16, block_v=32, block_d=16, num_warps=1, num_stages=1)
    if dtype == torch.float32:
        return KernelConfig(block_n=64, block_v=64, block_d=32, num_warps=4, num_stages=2)
    return KernelConfig()


@triton.jit
def _tanh(x):
    # tanh from exp: libdevice.tanh does not exist under the interpreter; |x| keeps exp from overflowing.
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _logit_tile(H, W, B, rows, cols, row_ok, col_ok, D, stride_h, stride_w,
                HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
                PRECISION: tl.constexpr, UPCAST: tl.constexpr, EVEN_D: tl.constexpr):
    acc = tl.zeros((BLOCK_N, BLOCK_V), dtype=tl.float32)
    h_ptr = H + rows.to(tl.int64)[:, None] * stride_h
    w_ptr = W + cols.to(tl.int64)[:, None] * stride_w
    for k in range(0, D, BLOCK_D):
        ks = k + tl.arange(0, BLOCK_D)
        if EVEN_D:  # no mask along D when BLOCK_D divides it
            h = tl.load(h_ptr + ks[None, :], mask=row_ok[:, None], other=0.0)
            w = tl.load(w_ptr + ks[None, :], mask=col_ok[:, None], other=0.0)
        else:
            k_ok = ks < D
            h = tl.load(h_ptr + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            w = tl.load(w_ptr + ks[None, :], mask=col_ok[:, None] & k_ok[None, :], other=0.0)
        if UPCAST:  # the interpreter's tl.dot misreads bf16 operands (stored as uint16); upcast there only
            h = h.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(h, tl.trans(w), acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(B + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def _forward_kernel(H, W, B, T, MAX, SUMEXP, ZTARGET, ZSUM, N, V, D, stride_h, stride_w, tiles_per_split, cap,
                    HAS_BIAS: tl.constexpr, HAS_CAP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr,
                    BLOCK_D: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
                    EVEN_D: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    tgt = tl.load(T + rows, mask=row_ok, other=-1)
    run_max = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    run_sum = tl.zeros((BLOCK_N,), tl.float32)
    z_target = tl.zeros((BLOCK_N,), tl.float32)
    z_total = tl.zeros((BLOCK_N,), tl.float32)
    for i in range(tiles_per_split):
        cols = (pid_s * tiles_per_split + i) * BLOCK_V + tl.arange(0, BLOCK_V)
        col_ok = cols < V
        z = _logit_tile(H, W, B, rows, cols, row_ok, col_ok, D, stride_h, stride_w,
                        HAS_BIAS, BLOCK_N, BLOCK_V, BLOCK_D, PRECISION, UPCAST, EVEN_D)
        if HAS_CAP:
            z = cap * _tanh(z / cap)
        z = tl.where(col_ok[None, :], z, 0.0)  # padded columns must not enter the logit sum
        z_total += tl.sum(z, 1)
        z_target += tl.sum(tl.where(cols[None, :] == tgt[:, None], z, 0.0), 1)
        z = tl.where(col_ok[None, :], z, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(z, 1))
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(z - new_max[:, None]), 1)
        run_max = new_max
    out = pid_s * N + rows
    tl.store(MAX + out, run_max, mask=row_ok)
    tl.store(SUMEXP + out, run_sum, mask=row_ok)
    tl.store(ZTARGET + out, z_target, mask=row_ok)
    tl.store(ZSUM + out, z_total, mask=row_ok)


@triton.jit
def _grad_logits_kernel(H, W, B, T, LSE, SCALE, G, N, D, c0, n_cols, stride_h, stride_w, stride_g, cap,
                        smooth, target_weight,
                        HAS_BIAS: tl.constexpr, HAS_CAP: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
                        UPCAST: tl.constexpr, EVEN_D: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_v = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    local = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    row_ok = rows < N
    col_ok = local < n_cols
    cols = c0 + local
    z = _logit_tile(H, W, B, rows, cols, row_ok, col_ok, D, stride_h, stride_w,
                    HAS_BIAS, BLOCK_N, BLOCK_V, BLOCK_D, PRECISION, UPCAST, EVEN_D)
    lse = tl.load(LSE + rows, mask=row_ok, other=0.0)
    scale = tl.load(SCALE + rows, mask=row_ok, other=0.0)
    tgt = tl.load(T + rows, mask=row_ok, other=-1)
    if HAS_CAP:
        t = _tanh(z / cap)
        z = cap * t
    g = tl.exp(z - lse[:, None]) - smooth - tl.where(cols[None, :] == tgt[:, None], target_weight, 0.0)
    if HAS_CAP:
        g = g * (1.0 - t * t)
    g = g * scale[:, None]
    g_ptr = G + rows.to(tl.int64)[:, None] * stride_g + local[None, :]
    tl.store(g_ptr, g.to(G.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


def default_grad_chunk(n_rows: int, d: int, vocab: int, itemsize: int) -> int:
    """Vocabulary columns per backward chunk: about D (so the gradient buffer is about the size of dH), at
    least 1024 (below that the fp32 dH accumulator's read-modify-write per chunk dominates), at most what
    ``GRAD_CHUNK_MAX_BYTES`` allows for ``n_rows`` rows."""
    cols = max(1024, -(-d // 256) * 256)
    cap = max(128, GRAD_CHUNK_MAX_BYTES // max(1, n_rows * itemsize) // 128 * 128)
    return min(vocab, cols, cap)


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def _upcast(dtype: torch.dtype) -> bool:
    return interpreting() and dtype != torch.float32


def _n_splits(n_row_blocks: int, n_tiles: int, device: torch.device) -> tuple[int, int]:
    """(splits, tiles per split): enough programs for ~4 waves, every split starting on a real tile."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
    splits = max(1, min(n_tiles, triton.cdiv(4 * sms, n_row_blocks)))
    per_split = triton.cdiv(n_tiles, splits)
    return triton.cdiv(n_tiles, per_split), per_split


def row_statistics(hidden, weight, bias, targets, softcap=None, config: KernelConfig | None = None):
    """Per-row fp32 (lse, target logit, logit sum) of softcap(hidden @ weight.T + bias), fused; no logits stored.

    Rows whose target is not a class id (e.g. ``ignore_index``) get a target logit of 0.
    """
    cfg = config or default_config(hidden.dtype)
    n, d = hidden.shape
    vocab = weight.shape[0]
    hidden, weight = hidden.contiguous(), weight.contiguous()
    row_blocks = triton.cdiv(n, cfg.block_n)
    splits, per_split = _n_splits(row_blocks, triton.cdiv(vocab, cfg.block_v), hidden.device)
    parts = torch.empty((4, splits, n), dtype=torch.float32, device=hidden.device)
    if n == 0:
        return parts[0, 0], parts[2, 0], parts[3, 0]
    _forward_kernel[(row_blocks, splits)](
        hidden, weight, bias if bias is not None else hidden, targets, parts[0], parts[1], parts[2], parts[3],
        n, vocab, d, hidden.stride(0), weight.stride(0), per_split, float(softcap or 1.0),
        HAS_BIAS=bias is not None, HAS_CAP=softcap is not None, BLOCK_N=cfg.block_n, BLOCK_V=cfg.block_v,
        BLOCK_D=cfg.block_d, PRECISION=_precision(hidden.dtype), UPCAST=_upcast(hidden.dtype),
        EVEN_D=d % cfg.block_d == 0, num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    run_max = parts[0].amax(0)
    lse = run_max + (parts[1] * torch.exp(parts[0] - run_max)).sum(0).log()
    return lse, parts[2].sum(0), parts[3].sum(0)


def grad_logits_into(out, hidden, weight, bias, targets, lse, scale, label_smoothing, softcap, c0, c1,
                     config: KernelConfig | None = None):
    """Write dL/dz for vocabulary columns c0..c1 into ``out`` (n, c1 - c0), recomputing the logit tiles."""
    cfg = config or default_config(hidden.dtype)
    n, d = hidden.shape
    vocab = weight.shape[0]
    grid = (triton.cdiv(n, cfg.block_n), triton.cdiv(c1 - c0, cfg.block_v))
    if n == 0:
        return out
    _grad_logits_kernel[grid](
        hidden, weight, bias if bias is not None else hidden, targets, lse, scale, out, n, d, c0, c1 - c0,
        hidden.stride(0), weight.stride(0), out.stride(0), float(softcap or 1.0),
        label_smoothing / vocab, 1.0 - label_smoothing,
        HAS_BIAS=bias is not None, HAS_CAP=softcap is not None, BLOCK_N=cfg.block_n, BLOCK_V=cfg.block_v,
        BLOCK_D=cfg.block_d, PRECISION=_precision(hidden.dtype), UPCAST=_upcast(hidden.dtype),
        EVEN_D=d % cfg.block_d == 0, num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    return out


class TritonLinearCrossEntropy(torch.autograd.Function):
    """Autograd function over flattened (N, D) inputs; see ``lmcal.losses.linear_cross_entropy``."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, label_smoothing, ignore_index, softcap, reduction,
                chunk_size, config):
        rows = Rows.select(hidden.contiguous(), targets, ignore_index)
        weight = weight.contiguous()
        bias = None if bias is None else bias.contiguous()
        lse, z_target, z_total = row_statistics(rows.hidden, weight, bias, rows.targets, softcap, config)
        vocab = weight.shape[0]
        row_loss = lse - (1.0 - label_smoothing) * z_target - (label_smoothing / vocab) * z_total
        ctx.save_for_backward(rows.hidden, weight, bias, rows.targets, lse, rows.index)
        ctx.options = (label_smoothing, softcap, reduction, chunk_size, targets.numel(), config)
        return reduce_rows(row_loss, rows, reduction, hidden.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        h, weight, bias, targets, lse, index = ctx.saved_tensors
        label_smoothing, softcap, reduction, chunk_size, n_rows, config = ctx.options
        rows = Rows(h, targets, index, n_rows)
        scale = row_grad_scale(grad_output, rows, reduction).contiguous()
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2])
        op = gemm_dtype(h)
        g_dtype = h.dtype if op == h.dtype else torch.float32
        chunk = chunk_size or default_grad_chunk(rows.n_valid, h.shape[1], weight.shape[0], g_dtype.itemsize)
        buffer = torch.empty((rows.n_valid, chunk), dtype=g_dtype, device=h.device)

        def grad_chunk(c0: int, c1: int) -> torch.Tensor:
            out = buffer[:, : c1 - c0]
            grad_logits_into(out, h, weight, bias, targets, lse, scale, label_smoothing, softcap, c0, c1, config)
            return out.to(op)

        d_hidden, d_weight, d_bias = backward_by_vocab_chunks(h.to(op), weight, bias, needs, chunk, grad_chunk)
        buffer = grad_chunk = None  # free the chunk buffer before the bf16 copy of the hidden gradient exists
        if d_hidden is not None:
            d_hidden = rows.scatter(d_hidden.to(h.dtype))
        return d_hidden, d_weight, d_bias, None, None, None, None, None, None, None
