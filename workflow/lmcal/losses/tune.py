"""Tile-size and chunk-size sweep of the Triton path on the current GPU.

    python -m lmcal.losses.tune --d 2304 --v 256000 --tokens 8192

Times fwd+bwd (median of ``triton.testing.do_bench``) and peak extra memory for each kernel config and
backward chunk size, so the defaults in ``triton_kernel.default_config`` can be chosen from measurements.
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch

from .benchmark import DTYPES, make_inputs
from .triton_kernel import KernelConfig, TritonLinearCrossEntropy

CANDIDATES = (  # the first was the best on an H100 (see triton_kernel.default_config)
    KernelConfig(128, 256, 64, 8, 3),
    KernelConfig(128, 256, 64, 8, 4),
    KernelConfig(256, 128, 64, 8, 3),
    KernelConfig(128, 128, 64, 8, 3),
    KernelConfig(128, 128, 64, 4, 4),
    KernelConfig(64, 256, 64, 4, 4),
    KernelConfig(128, 128, 128, 8, 2),
    KernelConfig(128, 256, 32, 8, 4),
)


def sweep(d: int, v: int, tokens: int, dtype: torch.dtype, configs=CANDIDATES, chunk_sizes=(None,),
          label_smoothing: float = 0.1) -> pd.DataFrame:
    """One row per (config, chunk size): fwd+bwd ms (median) and peak extra MiB."""
    import triton.testing

    hidden, weight, targets = make_inputs(tokens, d, v, dtype, "cuda")
    rows = []
    for cfg in configs:
        for chunk in chunk_sizes:
            def step(chunk=chunk, cfg=cfg):
                loss = TritonLinearCrossEntropy.apply(hidden, weight, None, targets, label_smoothing, -100, None,
                                                      "mean", chunk, cfg)
                loss.backward()
                hidden.grad = weight.grad = None

            try:
                ms = triton.testing.do_bench(step, warmup=100, rep=500, return_mode="median")
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                step()
                torch.cuda.synchronize()
                peak = (torch.cuda.max_memory_allocated() - base) / 2**20
                rows.append({**cfg.__dict__, "chunk": chunk, "ms": ms, "peak_mb": peak, "status": "ok"})
            except Exception as exc:  # noqa: BLE001 - a config that does not fit the GPU must not stop the sweep
                rows.append({**cfg.__dict__, "chunk": chunk, "status": f"error: {str(exc)[:120]}"})
            print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def time_parts(d: int, v: int, tokens: int, dtype: torch.dtype, configs=CANDIDATES,
               chunk_sizes=(1024, 2048, 4096)) -> pd.DataFrame:
    """Milliseconds of each backward/forward part, against one cuBLAS GEMM of the same shape (one "unit").

    Rows: ``gemm_unit`` (h @ w.T), ``grad_gemms`` per chunk size (dW = G^T H and dH += G W over all chunks),
    and per kernel config ``forward`` (row statistics) and ``grad_kernel`` (logit gradients of all chunks).
    """
    import triton.testing

    from .common import addmm_f32_
    from .triton_kernel import grad_logits_into, row_statistics

    hidden, weight, targets = make_inputs(tokens, d, v, dtype, "cuda")
    hidden, weight = hidden.detach(), weight.detach()

    def bench(fn) -> float:
        return triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")

    rows = [{"part": "gemm_unit", "ms": bench(lambda: torch.mm(hidden, weight.t()))}]
    lse = torch.logsumexp(hidden.float() @ weight.float().t(), 1)
    scale = torch.full((tokens,), 1.0 / tokens, device="cuda")
    d_weight = torch.empty_like(weight)
    acc = torch.zeros(tokens, d, device="cuda")
    for chunk in chunk_sizes:
        buffer = torch.randn(tokens, chunk, device="cuda").to(dtype)

        def gemms(chunk=chunk, buffer=buffer):
            for c0 in range(0, v, chunk):
                g = buffer[:, : min(chunk, v - c0)]
                torch.mm(g.t(), hidden, out=d_weight[c0 : c0 + g.shape[1]])
                addmm_f32_(acc, g, weight[c0 : c0 + g.shape[1]])

        rows.append({"part": "grad_gemms", "chunk": chunk, "ms": bench(gemms)})
        print(rows[-1], flush=True)
    chunk = chunk_sizes[-1]
    buffer = torch.empty(tokens, chunk, device="cuda", dtype=dtype)
    for cfg in configs:
        def grads(cfg=cfg):
            for c0 in range(0, v, chunk):
                c1 = min(c0 + chunk, v)
                grad_logits_into(buffer[:, : c1 - c0], hidden, weight, None, targets, lse, scale, 0.1, None,
                                 c0, c1, cfg)

        def forward(cfg=cfg):
            return row_statistics(hidden, weight, None, targets, None, cfg)

        for part, fn in (("forward", forward), ("grad_kernel", grads)):
            try:
                rows.append({"part": part, **cfg.__dict__, "ms": bench(fn)})
            except Exception as exc:  # noqa: BLE001 - out of shared memory or registers: skip the config
                rows.append({"part": part, **cfg.__dict__, "error": str(exc)[:120]})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table["units"] = table["ms"] / rows[0]["ms"]
    return table


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, required=True)
    parser.add_argument("--v", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    parser.add_argument("--chunks", default="", help="comma-separated backward chunk sizes (default: auto)")
    parser.add_argument("--out", default=None, help="CSV path for the table")
    parser.add_argument("--parts", action="store_true", help="time forward, gradient kernel and GEMMs apart")
    args = parser.parse_args()
    chunks = tuple(int(c) for c in args.chunks.split(",") if c)
    if args.parts:
        table = time_parts(args.d, args.v, args.tokens, DTYPES[args.dtype], chunk_sizes=chunks or (1024, 2048, 4096))
    else:
        table = sweep(args.d, args.v, args.tokens, DTYPES[args.dtype], chunk_sizes=chunks or (None,))
    print(table.to_string())
    if args.out:
        table.to_csv(args.out, index=False)


if __name__ == "__main__":
    _main()
