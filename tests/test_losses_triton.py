"""Triton kernels vs F.cross_entropy: under TRITON_INTERPRET=1 on CPU at small sizes, compiled on CUDA.

The interpreter must be switched on before ``lmcal.losses.triton_kernel`` is first imported (``triton.jit``
decides at decoration time), so this module sets it at import when there is no GPU.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

from lmcal.losses import linear_cross_entropy, triton_kernel
from test_losses import IGNORED, assert_matches, make_case, reference, run_both
from triton.runtime.interpreter import InterpretedFunction

if not CUDA and not isinstance(triton_kernel._forward_kernel, InterpretedFunction):
    pytest.skip("triton_kernel was imported before TRITON_INTERPRET=1; run this module alone",
                allow_module_level=True)

DEVICE = "cuda" if CUDA else "cpu"
SMALL = triton_kernel.KernelConfig(block_n=16, block_v=32, block_d=16, num_warps=1, num_stages=1)


def assert_grad_matches(got, want, dtype, what):
    """On CUDA the bf16 logit gradient is rounded before the two gradient GEMMs (as in torch's own bf16
    path), so there the check is on the norm; everywhere else it is elementwise (see ``assert_matches``)."""
    if CUDA and dtype != torch.float32:
        rel = ((got.double() - want.to(got.device)).norm() / want.norm()).item()
        assert rel < 5e-3, f"{what}: relative error {rel:.2e}"
    else:
        assert_matches(got.cpu(), want.cpu(), dtype, what)


@pytest.mark.parametrize(
    "dtype, beta, reduction, softcap",
    [
        (torch.float32, 0.0, "mean", None),
        (torch.float32, 0.1, "sum", 2.5),
        (torch.float32, 1.0, "none", None),
        (torch.float32, 0.1, "none", 2.5),
        (torch.bfloat16, 0.1, "mean", None),
        (torch.bfloat16, 0.0, "none", 2.5),
        (torch.bfloat16, 1.0, "sum", 2.5),
        (torch.bfloat16, 0.1, "mean", 2.5),
    ],
)
def test_triton_matches_torch(dtype, beta, reduction, softcap):
    (out, h, w, b), (ref, h64, w64, b64) = run_both(dtype, beta, softcap, reduction, impl="triton", device=DEVICE)
    assert out.dtype == dtype and h.grad.dtype == dtype and w.grad.dtype == dtype
    assert_matches(out.cpu(), ref.cpu(), dtype, "loss")
    assert_grad_matches(h.grad, h64.grad, dtype, "d_hidden")
    assert_grad_matches(w.grad, w64.grad, dtype, "d_weight")
    assert_grad_matches(b.grad, b64.grad, dtype, "d_bias")
    assert torch.all(h.grad[IGNORED] == 0)


def test_triton_without_bias_many_splits():
    # V = 290: 10 tiles of 32 (the last one partial) over several forward splits of 2 tiles each; D = 32 takes
    # the unmasked-D path of the tile loop (BLOCK_D divides D).
    (out, h, w, _), (ref, h64, w64, _) = run_both(torch.float32, 0.1, None, "mean", bias=False, impl="triton",
                                                  v=290, d=32, chunk_size=100, device=DEVICE)
    assert_matches(out.cpu(), ref, torch.float32, "loss")
    assert_matches(h.grad.cpu(), h64.grad, torch.float32, "d_hidden")
    assert_matches(w.grad.cpu(), w64.grad, torch.float32, "d_weight")
    assert torch.all(h.grad[IGNORED] == 0)


def _exact_logits(h64, w64, b64, softcap):
    z = F.linear(h64, w64, b64)
    return z if softcap is None else softcap * torch.tanh(z / softcap)


@pytest.mark.parametrize("softcap", [None, 2.5])
def test_row_statistics_kernel_masks_ignored_rows_and_padding(softcap):
    # Kernel level, no row compaction: rows 16..31 form a whole ignored row block, N = 37 ends in a partial
    # block, V = 101 ends in a partial tile; padded columns must not leak into the logit sum (loss = inf).
    (h, w, b), (h64, w64, b64), t = make_case(torch.float32, device=DEVICE)
    lse, z_target, z_sum = triton_kernel.row_statistics(h.detach(), w.detach(), b.detach(), t, softcap, SMALL)
    assert lse.device == h.device
    z = _exact_logits(h64, w64, b64, softcap).detach()
    t = t.cpu()
    want_target = torch.where(t != -100, z.gather(1, t.clamp(min=0)[:, None]).squeeze(1), 0.0)
    for got, want, what in ((lse, torch.logsumexp(z, 1), "lse"), (z_target, want_target, "z_target"),
                            (z_sum, z.sum(1), "z_sum")):
        assert torch.isfinite(got).all(), what
        assert_matches(got.cpu(), want, torch.float32, what)


def test_grad_logits_kernel_writes_only_its_chunk():
    (h, w, b), (h64, w64, b64), t = make_case(torch.float32, device=DEVICE)
    beta, softcap, c0, c1 = 0.1, 2.5, 30, 97  # a chunk not aligned to BLOCK_V = 32
    z_raw = F.linear(h64, w64, b64).detach()
    z = _exact_logits(h64, w64, b64, softcap).detach()
    lse = torch.logsumexp(z, 1)
    scale = torch.linspace(0.5, 2.0, len(t), dtype=torch.float64) * (t != -100).cpu()
    onehot = F.one_hot(t.cpu().clamp(min=0), w.shape[0]).double()
    want = (torch.softmax(z, 1) - beta / w.shape[0] - (1 - beta) * onehot) * scale[:, None]
    want = want * (1 - torch.tanh(z_raw / softcap) ** 2)
    buffer = torch.full((len(t), 80), float("nan"), device=DEVICE)
    triton_kernel.grad_logits_into(buffer[:, : c1 - c0], h.detach(), w.detach(), b.detach(), t,
                                   lse.float().to(DEVICE), scale.float().to(DEVICE), beta, softcap, c0, c1, SMALL)
    assert torch.isnan(buffer[:, c1 - c0:]).all()  # nothing written past the chunk
    assert_matches(buffer[:, : c1 - c0].cpu(), want[:, c0:c1], torch.float32, "grad logits")
    assert torch.all(buffer[IGNORED, : c1 - c0] == 0)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize(
    "dtype, n, d, v, beta, softcap, reduction",
    [
        (torch.bfloat16, 8187, 2304, 256000, 0.1, 30.0, "mean"),  # Gemma-2-2B head with its final softcap
        (torch.bfloat16, 8187, 2048, 128256, 0.2, None, "sum"),  # Llama-3.2-1B head
        (torch.float32, 4093, 576, 49157, 1.0, None, "none"),  # SmolLM2 width, V off every block size
    ],
)
def test_triton_full_size_on_gpu(dtype, n, d, v, beta, softcap, reduction):
    (h, w, _), _, t = make_case(dtype, n=n, d=d, v=v, bias=False, ignored=range(0, n, 5), device="cuda",
                                w_scale=2 * d**-0.5, exact=False)
    out = linear_cross_entropy(h, w, t, label_smoothing=beta, softcap=softcap, reduction=reduction, impl="triton")
    grad_out = torch.randn(out.shape, device="cuda").to(dtype)
    (out * grad_out).sum().backward()
    h32, w32 = (x.detach().float().requires_grad_() for x in (h, w))
    ref = reference(h32, w32, None, t, beta, softcap, reduction)
    (ref * grad_out.float()).sum().backward()
    tol = 1e-5 if dtype == torch.float32 else 5e-3
    for got, want, what in ((out, ref, "loss"), (h.grad, h32.grad, "d_hidden"), (w.grad, w32.grad, "d_weight")):
        rel = ((got.float() - want).norm() / want.norm()).item()
        assert rel < tol, f"{what}: relative error {rel:.2e}"
