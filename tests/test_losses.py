"""Chunked label-smoothed linear cross-entropy against F.cross_entropy on materialised float64 logits."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from lmcal.losses import label_smoothed_cross_entropy, linear_cross_entropy, resolve_impl
from lmcal.losses.chunked import default_chunk_size
from torch.utils._python_dispatch import TorchDispatchMode

N, D, V = 37, 24, 101  # N, V not multiples of any block or chunk size used below
CHUNK = 40  # 3 vocabulary chunks, the last one partial
IGNORED = [*range(16, 32), 3, 35]  # a whole 16-row block plus scattered rows


def make_case(dtype, *, seed=0, n=N, d=D, v=V, bias=True, ignored=IGNORED, device="cpu", w_scale=0.5, exact=True):
    """Leaves in ``dtype`` on ``device``, float64 CPU copies of the same (rounded) values, and targets."""
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=gen)
    w = torch.randn(v, d, generator=gen) * w_scale
    b = torch.randn(v, generator=gen) if bias else None
    t = torch.randint(0, v, (n,), generator=gen)
    t[list(ignored)] = -100
    leaves = [x.to(device=device, dtype=dtype).requires_grad_() if x is not None else None for x in (h, w, b)]
    copies = [x.detach().cpu().double().requires_grad_() if x is not None and exact else None for x in leaves]
    return leaves, copies, t.to(device)


def reference(h, w, b, t, beta, softcap, reduction):
    z = F.linear(h, w, b)
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    return F.cross_entropy(z, t, label_smoothing=beta, reduction=reduction)


def assert_matches(out, ref, dtype, what):
    """fp32: rounding-level agreement. bf16: within one bf16 ulp, since all arithmetic is fp32 and only the
    returned values are rounded to bf16."""
    rtol, atol = (1e-4, 1e-5) if dtype == torch.float32 else (2.0**-8, 1e-4)
    scale = ref.abs().max().item() or 1.0
    torch.testing.assert_close(out.double(), ref, rtol=rtol, atol=atol * scale, msg=lambda m: f"{what}: {m}")


def run_both(dtype, beta, softcap, reduction, *, bias=True, impl="chunked", chunk_size=CHUNK, **case):
    (h, w, b), (h64, w64, b64), t = make_case(dtype, bias=bias, **case)
    out = linear_cross_entropy(h, w, t, bias=b, label_smoothing=beta, softcap=softcap, reduction=reduction,
                               impl=impl, chunk_size=chunk_size)
    ref = reference(h64, w64, b64, t.cpu(), beta, softcap, reduction)
    grad_out = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1)).to(dtype).double()
    (out * grad_out.to(out)).sum().backward()
    (ref * grad_out).sum().backward()
    return (out, h, w, b), (ref, h64, w64, b64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("beta", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("softcap", [None, 2.5])
def test_chunked_matches_torch(dtype, beta, reduction, softcap):
    (out, h, w, b), (ref, h64, w64, b64) = run_both(dtype, beta, softcap, reduction)
    assert out.dtype == dtype and out.shape == ref.shape
    assert h.grad.dtype == dtype and w.grad.dtype == dtype and b.grad.dtype == dtype
    assert_matches(out, ref, dtype, "loss")
    assert_matches(h.grad, h64.grad, dtype, "d_hidden")
    assert_matches(w.grad, w64.grad, dtype, "d_weight")
    assert_matches(b.grad, b64.grad, dtype, "d_bias")
    assert torch.all(h.grad[IGNORED] == 0)


def test_leading_dims_and_no_bias():
    torch.manual_seed(0)
    h = torch.randn(3, 5, D, requires_grad=True)
    w = torch.randn(V, D, requires_grad=True)
    t = torch.randint(0, V, (3, 5))
    t[1] = -100
    out = linear_cross_entropy(h, w, t, label_smoothing=0.2, reduction="none", chunk_size=16)
    ref = label_smoothed_cross_entropy(h @ w.T, t, 0.2, -100, "none")
    assert out.shape == (3, 5)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(out[1], torch.zeros(5))


def test_frozen_weight_and_frozen_hidden():
    (h, w, _), (h64, w64, _), t = make_case(torch.float32, bias=False)
    w.requires_grad_(False)
    linear_cross_entropy(h, w, t, label_smoothing=0.1, chunk_size=CHUNK).backward()
    reference(h64, w64, None, t, 0.1, None, "mean").backward()
    assert w.grad is None
    assert_matches(h.grad, h64.grad, torch.float32, "d_hidden")
    h2 = h.detach()
    w.requires_grad_(True)
    linear_cross_entropy(h2, w, t, label_smoothing=0.1, chunk_size=CHUNK).backward()
    assert_matches(w.grad, w64.grad, torch.float32, "d_weight")


def test_uniform_logits_give_log_vocab_for_any_smoothing():
    # Known answer: equal logits make p uniform, so lse - (1-beta) z_y - beta mean(z) = ln V exactly.
    h = torch.randn(N, D)
    w = torch.zeros(V, D)
    t = torch.randint(0, V, (N,))
    for beta in (0.0, 0.3, 1.0):
        out = linear_cross_entropy(h, w, t, bias=torch.full((V,), 1.7), label_smoothing=beta, chunk_size=CHUNK)
        assert out.item() == pytest.approx(torch.log(torch.tensor(float(V))).item(), abs=1e-6)


def test_gradient_rows_sum_to_zero():
    # Invariant: each row's dL/dz sums to 0 (p and the smoothed target both sum to 1), so the bias gradient
    # sums to 0 and every column of the weight gradient sums to 0. (A softcap breaks it: dz_capped/dz varies.)
    (h, w, b), _, t = make_case(torch.float32)
    linear_cross_entropy(h, w, t, bias=b, label_smoothing=0.4, chunk_size=CHUNK).backward()
    assert abs(b.grad.sum().item()) < 1e-5
    torch.testing.assert_close(w.grad.sum(0), torch.zeros(D), atol=1e-5, rtol=0)


def test_all_rows_ignored_matches_torch():
    (h, w, _), _, t = make_case(torch.float32, bias=False, ignored=range(N))
    z = (h @ w.T).detach().requires_grad_()
    ref = F.cross_entropy(z, t, label_smoothing=0.1)
    ref.backward()
    out = linear_cross_entropy(h, w, t, label_smoothing=0.1)
    out.backward()
    assert torch.isnan(ref) and torch.isnan(out)  # 0 / 0, as torch gives
    assert torch.all(z.grad == 0) and torch.all(h.grad == 0) and torch.all(w.grad == 0)
    assert linear_cross_entropy(h, w, t, reduction="sum").item() == 0.0


class _LargestAllocation(TorchDispatchMode):
    """Records the largest tensor any aten op returns."""

    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for x in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(x, torch.Tensor):
                self.largest = max(self.largest, x.numel())
        return out


def test_never_materialises_the_logits():
    n, v, chunk = 128, 1024, 64
    (h, w, b), _, t = make_case(torch.float32, n=n, v=v, ignored=[0, 5])
    with _LargestAllocation() as naive:
        label_smoothed_cross_entropy(F.linear(h, w, b), t, 0.1).backward()
    assert naive.largest >= n * v  # the recorder sees the materialised logits
    h.grad = w.grad = b.grad = None
    with _LargestAllocation() as ours:
        linear_cross_entropy(h, w, t, bias=b, label_smoothing=0.1, softcap=5.0, chunk_size=chunk).backward()
    assert ours.largest <= max(n * chunk, v * D)  # one chunk of logits, or the weight gradient itself


def test_default_chunk_size_fits_budget():
    assert default_chunk_size(8192, 49152) == 4096  # 8192 x 4096 fp32 = 128 MiB
    assert default_chunk_size(10, 97) == 97
    assert default_chunk_size(10**6, 256000) == 128
    assert default_chunk_size(3000, 256000) % 128 == 0


def test_reference_wrapper_equals_cross_entropy():
    torch.manual_seed(0)
    z = torch.randn(2, 7, 11)
    t = torch.randint(0, 11, (2, 7))
    t[0, 0] = -100
    got = label_smoothed_cross_entropy(z, t, 0.1, -100, "none")
    want = F.cross_entropy(z.transpose(1, 2), t, label_smoothing=0.1, reduction="none")
    torch.testing.assert_close(got, want)
    capped = label_smoothed_cross_entropy(z, t, 0.1, -100, "mean", softcap=2.0)
    torch.testing.assert_close(capped, F.cross_entropy((2.0 * torch.tanh(z / 2.0)).reshape(-1, 11), t.reshape(-1),
                                                       label_smoothing=0.1))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"label_smoothing": 1.5}, "label_smoothing"),
        ({"reduction": "avg"}, "reduction"),
        ({"softcap": 0.0}, "softcap"),
        ({"impl": "fast"}, "impl"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"targets": torch.full((N,), V)}, "targets"),
        ({"targets": torch.zeros(N + 1, dtype=torch.long)}, "targets"),
        ({"weight": torch.zeros(V, D, dtype=torch.float64)}, "dtype"),
        ({"bias": torch.zeros(V + 1)}, "bias"),
    ],
)
def test_bad_input_raises_value_error(kwargs, match):
    args = {"hidden": torch.zeros(N, D), "weight": torch.zeros(V, D), "targets": torch.zeros(N, dtype=torch.long)}
    for key in ("hidden", "weight", "targets"):
        if key in kwargs:
            args[key] = kwargs.pop(key)
    with pytest.raises(ValueError, match=match):
        linear_cross_entropy(args["hidden"], args["weight"], args["targets"], **kwargs)


def test_auto_is_chunked_on_cpu():
    assert resolve_impl("auto", torch.device("cpu")) == "chunked"


def test_import_needs_no_triton_and_triton_impl_needs_cuda():
    # A fresh interpreter: importing lmcal.losses must not import triton; with triton blocked, "auto" falls
    # back to chunked even for CUDA devices; with triton present but no interpreter, impl="triton" on CPU is
    # a clear ValueError.
    code = textwrap.dedent(
        """
        import os, sys
        os.environ.pop("TRITON_INTERPRET", None)
        import torch, lmcal.losses as L
        assert "triton" not in sys.modules, "importing lmcal.losses imported triton"

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "triton" or name.startswith("triton."):
                    raise ModuleNotFoundError(name)

        sys.meta_path.insert(0, Block())
        assert not L.triton_available()
        assert L.resolve_impl("auto", torch.device("cuda")) == "chunked"
        sys.meta_path.pop(0)
        if L.triton_available():
            try:
                L.linear_cross_entropy(torch.zeros(2, 3), torch.zeros(5, 3), torch.zeros(2, dtype=torch.long),
                                       impl="triton")
            except ValueError as exc:
                assert "CUDA" in str(exc)
            else:
                raise AssertionError("impl='triton' on CPU without the interpreter did not raise")
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_chunked_full_size_on_gpu():
    (h, w, b), _, t = make_case(torch.bfloat16, n=8187, d=576, v=49157, ignored=range(0, 8187, 5), device="cuda",
                                w_scale=576**-0.5, exact=False)
    out = linear_cross_entropy(h, w, t, bias=b, label_smoothing=0.1, softcap=30.0, impl="chunked")
    out.backward()
    h32, w32, b32 = (x.detach().float().requires_grad_() for x in (h, w, b))
    ref = reference(h32, w32, b32, t, 0.1, 30.0, "mean")
    ref.backward()
    for got, want in ((out, ref), (h.grad, h32.grad), (w.grad, w32.grad), (b.grad, b32.grad)):
        assert ((got.float() - want).norm() / want.norm()).item() < 1e-2
