"""Time and peak memory of linear cross-entropy implementations, fwd+bwd, in one run.

Methods: ``naive`` (materialised logits + ``F.cross_entropy``), ``compiled`` (the same under ``torch.compile``),
``chunked`` and ``triton`` (ours), ``liger`` (Liger-Kernel's fused linear cross-entropy, native label smoothing;
``liger_fp32`` with ``accum_dtype=float32``) and ``cce`` (stock Cut Cross-Entropy plus the label-smoothing
composition of the spec, section 4).

Timings interleave the methods (each iteration runs every method once), so a drifting load on a shared
machine biases none of them; on CPU the process CPU time is reported beside the wall time for the same reason.
Peak memory is what one fwd+bwd adds on top of its inputs, gradients included (every method must produce them):
- CUDA: ``torch.cuda.max_memory_allocated()`` minus the allocation before the call (caching excluded).
- CPU: tracemalloc and ``torch.cuda`` stats see nothing of torch's CPU allocations, so each (method, size) runs
  in a fresh subprocess; after warm-up it returns freed heap to the OS (``malloc_trim``), resets the kernel's
  resident-set high-water mark (write "5" to ``/proc/self/clear_refs``) and reports VmHWM minus VmRSS after
  one more fwd+bwd. Where clear_refs is not writable, a thread samples the RSS every 2 ms instead.

Run as a module (``python -m lmcal.losses.benchmark --one '<json>'``) it measures one case's memory, prints JSON.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from . import linear_cross_entropy

METHODS = ("naive", "compiled", "chunked", "triton", "liger", "liger_fp32", "cce")
CUDA_ONLY = frozenset({"triton", "liger", "liger_fp32", "cce"})
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def loss_function(method: str, label_smoothing: float, ignore_index: int = -100) -> LossFn:
    """``fn(hidden, weight, targets) -> mean loss`` for one benchmarked method."""
    beta = label_smoothing

    def naive(h, w, t):
        return F.cross_entropy(h @ w.t(), t, ignore_index=ignore_index, label_smoothing=beta)

    if method == "naive":
        return naive
    if method == "compiled":
        return torch.compile(naive)
    if method in ("chunked", "triton"):
        return lambda h, w, t: linear_cross_entropy(
            h, w, t, label_smoothing=beta, ignore_index=ignore_index, impl=method
        )
    if method in ("liger", "liger_fp32"):
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        # liger_fp32 accumulates the weight gradient in fp32 (accum_dtype), as our kernels always do; plain
        # liger accumulates it in the weight dtype across its token chunks.
        accum = torch.float32 if method == "liger_fp32" else None
        module = LigerFusedLinearCrossEntropyLoss(ignore_index=ignore_index, label_smoothing=beta, accum_dtype=accum)
        return lambda h, w, t: module(w, h, t)
    if method == "cce":
        from cut_cross_entropy import linear_cross_entropy as cce_loss

        def cce(h, w, t):
            # Spec section 4 with the PyPI release (no return_lse): lse = nll + z_y, so the smoothing term
            # beta * (lse - mean_j z_j) = beta * (nll + z_y - h . mean_j c_j). CCE's gradient filtering stays
            # valid because everything dense in the LS gradient goes through these two PyTorch terms.
            valid = t != ignore_index
            nll = cce_loss(h, w, t, ignore_index=ignore_index, reduction="none")
            z_target = (h.float() * w[t.clamp(min=0)].float()).sum(-1)
            smooth = nll + z_target - h.float() @ w.mean(0, dtype=torch.float32)
            return ((1.0 - beta) * nll + beta * smooth)[valid].mean()

        return cce
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def make_inputs(n: int, d: int, v: int, dtype: torch.dtype, device: str, seed: int = 0):
    """Random hidden states (N, D), a head (V, D) scaled to O(1) logits, uniform targets; leaves need grad."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    hidden = torch.randn(n, d, generator=gen).to(device=device, dtype=dtype).requires_grad_()
    weight = (torch.randn(v, d, generator=gen) * d**-0.5).to(device=device, dtype=dtype).requires_grad_()
    targets = torch.randint(0, v, (n,), generator=gen).to(device)
    return hidden, weight, targets


def _fwd_bwd(fn: LossFn, hidden, weight, targets) -> float:
    loss = fn(hidden, weight, targets)
    loss.backward()
    value = float(loss.detach().float())
    hidden.grad = None
    weight.grad = None
    return value


def rss_mb(field: str) -> float:
    """The /proc/self/status memory field ``field`` (VmRSS, VmHWM, ...) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def cpu_peak_mb(run: Callable[[], float]) -> tuple[float, float]:
    """(loss, peak RSS growth in MiB) of ``run()``; see the module docstring for the method."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    base = rss_mb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        peak = [base]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mb("VmRSS"))
                time.sleep(0.002)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        value = run()
        stop.set()
        thread.join()
        return value, peak[0] - base
    value = run()
    return value, rss_mb("VmHWM") - base


def measure_memory(method: str, d: int, v: int, n: int, dtype: str, device: str, label_smoothing: float,
                   warmup: int, seed: int = 0) -> dict:
    """Peak extra memory (MiB) of one fwd+bwd after ``warmup`` calls, and the loss it returned."""
    fn = loss_function(method, label_smoothing)
    hidden, weight, targets = make_inputs(n, d, v, DTYPES[dtype], device, seed)
    for _ in range(warmup):
        _fwd_bwd(fn, hidden, weight, targets)
    if device != "cuda":
        loss, peak = cpu_peak_mb(lambda: _fwd_bwd(fn, hidden, weight, targets))
        return {"peak_mb": peak, "loss": loss}
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    loss = _fwd_bwd(fn, hidden, weight, targets)
    torch.cuda.synchronize()
    return {"peak_mb": (torch.cuda.max_memory_allocated() - base) / 2**20, "loss": loss}


def time_interleaved(fns: dict[str, LossFn], inputs, device: str, warmup: int, iters: int) -> dict[str, dict]:
    """Median and min wall time (ms) of fwd+bwd per method, plus process CPU time on CPU.

    The methods take turns within every iteration, so a drifting machine load (a shared CPU, GPU clocks)
    affects all of them alike and the ratios stay fair.
    """
    hidden, weight, targets = inputs
    for fn in fns.values():
        for _ in range(warmup):
            _fwd_bwd(fn, hidden, weight, targets)
    wall: dict[str, list[float]] = {m: [] for m in fns}
    cpu: dict[str, list[float]] = {m: [] for m in fns}
    for _ in range(iters):
        for method, fn in fns.items():
            if device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                _fwd_bwd(fn, hidden, weight, targets)
                end.record()
                end.synchronize()
                wall[method].append(start.elapsed_time(end))
            else:
                t0, c0 = time.perf_counter(), time.process_time()
                _fwd_bwd(fn, hidden, weight, targets)
                wall[method].append((time.perf_counter() - t0) * 1e3)
                cpu[method].append((time.process_time() - c0) * 1e3)
    out = {}
    for method in fns:
        out[method] = {"time_ms": statistics.median(wall[method]), "time_ms_min": min(wall[method])}
        if cpu[method]:
            out[method]["cpu_ms"] = statistics.median(cpu[method])
    return out


def measure_memory_isolated(case: dict, threads: int | None = None) -> dict:
    """``measure_memory(**case)`` in a fresh Python process (needed for CPU peak RSS); errors become a status."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "lmcal.losses.benchmark", "--one", json.dumps(case)]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        return {"status": "error: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return {"status": "ok", **json.loads(proc.stdout.strip().splitlines()[-1])}


def _memory_row(case: dict, isolate: bool, threads: int | None) -> dict:
    if isolate:
        return measure_memory_isolated(case, threads)
    try:
        return {"status": "ok", **measure_memory(**case)}
    except Exception as exc:  # noqa: BLE001 - an OOM or a missing package must not stop the other methods
        return {"status": f"error: {type(exc).__name__}: {str(exc)[:300]}"}
    finally:
        gc.collect()
        if case["device"] == "cuda":
            torch.cuda.empty_cache()


def run_benchmark(sizes, tokens: int, dtype: str, device: str, warmup: int, iters: int,
                  label_smoothing: float, methods=METHODS, seed: int = 0, isolate: bool | None = None,
                  threads: int | None = None) -> pd.DataFrame:
    """One row per (size, method): peak memory, loss, interleaved timings; CUDA-only methods skipped on CPU.

    On CPU each memory measurement runs in its own process (``isolate``) with one warm-up call for
    ``compiled`` only (to compile); timings then run in this process, ``warmup`` calls per method first.
    """
    from tqdm import tqdm

    for method in methods:
        if method not in METHODS:
            raise ValueError(f"methods: {method!r} is not one of {METHODS}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no CUDA device")
    n_tokens = int(tokens)
    isolate = device == "cpu" if isolate is None else isolate
    rows = []
    for d, v in tqdm([(int(d), int(v)) for d, v in sizes], desc="loss benchmark sizes"):
        size_rows = {}
        for method in methods:
            row = {"method": method, "d": d, "v": v, "n": n_tokens, "dtype": dtype, "device": device,
                   "label_smoothing": label_smoothing}
            if method in CUDA_ONLY and device != "cuda":
                row["status"] = "skipped: needs CUDA"
            else:
                mem_warmup = warmup if not isolate else int(method == "compiled")
                case = {"method": method, "d": d, "v": v, "n": n_tokens, "dtype": dtype, "device": device,
                            "label_smoothing": label_smoothing, "warmup": mem_warmup, "seed": seed}
                row.update(_memory_row(case, isolate, threads))
            size_rows[method] = row
            tqdm.write(json.dumps(row))
        ok = [m for m, r in size_rows.items() if r["status"] == "ok"]
        if ok and iters > 0:
            inputs = make_inputs(n_tokens, d, v, DTYPES[dtype], device, seed)
            fns = {m: loss_function(m, label_smoothing) for m in ok}
            for method, stats in time_interleaved(fns, inputs, device, 0 if not isolate else warmup, iters).items():
                size_rows[method].update(stats)
            del inputs, fns
            gc.collect()
        rows.extend(size_rows.values())
    return pd.DataFrame(rows)


def summarize(table: pd.DataFrame) -> dict:
    """Per size: each method's time and memory as ratios to naive and to Liger, and |loss - naive loss|."""
    summary = {}
    ok = table[table["status"] == "ok"].set_index("method") if "status" in table else table.iloc[:0]
    for (d, v), group in ok.groupby(["d", "v"]):
        entry = {}
        for method, row in group.iterrows():
            stats = {k: row[k] for k in ("time_ms", "cpu_ms", "peak_mb") if k in row and pd.notna(row[k])}
            for base in ("naive", "liger"):
                if base in group.index and base != method:
                    for key in ("time_ms", "cpu_ms"):
                        if key in stats and pd.notna(group.loc[base].get(key)):
                            stats[f"{key.split('_')[0]}_vs_{base}"] = stats[key] / group.loc[base, key]
                    stats[f"memory_vs_{base}"] = row["peak_mb"] / max(group.loc[base, "peak_mb"], 1e-9)
            if "naive" in group.index:
                stats["loss_diff_vs_naive"] = abs(row["loss"] - group.loc["naive", "loss"])
            entry[method] = stats
        summary[f"d{d}_v{v}"] = entry
    return summary


def flat_metrics(summary: dict) -> dict[str, float]:
    """``summarize`` output as flat MLflow metric names, e.g. ``d576_v49152.chunked.time_vs_naive``."""
    return {f"{size}.{method}.{key}": float(value) for size, methods in summary.items()
            for method, stats in methods.items() for key, value in stats.items()}


def format_table(table: pd.DataFrame) -> str:
    """The table as fixed-width text with time and memory ratios against naive and Liger per size."""
    df = table.copy()
    for base in ("naive", "liger"):
        for key in ("time_ms", "peak_mb"):
            if key not in df:
                continue
            ref = df[df["method"] == base].set_index(["d", "v"])[key]
            df[f"{key.split('_')[0]}/{base}"] = [
                row[key] / ref.get((row["d"], row["v"]), float("nan")) for _, row in df.iterrows()]
    cols = [c for c in ("d", "v", "method", "status", "time_ms", "cpu_ms", "peak_mb", "loss", "time/naive",
                        "peak/naive", "time/liger", "peak/liger") if c in df]
    return df[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}")


def parse_cli(argv: list[str] | None = None) -> tuple[dict, Path]:
    """Settings for ``run_benchmark`` and the output folder, from the standalone script's command line."""
    parser = argparse.ArgumentParser(description="Benchmark label-smoothed linear cross-entropy implementations")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--sizes", default="576x49152", help="comma-separated DxV, e.g. 576x49152,2304x256000")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bf16 on cuda, fp32 on cpu")
    parser.add_argument("--warmup", type=int, default=None, help="default: 3 on cuda, 1 on cpu")
    parser.add_argument("--iters", type=int, default=None, help="default: 20 on cuda, 2 on cpu")
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads of CPU measurements")
    parser.add_argument("--out", default="results/losses", help="folder for benchmark.parquet and summary.json")
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    settings = {
        "sizes": [[int(x) for x in s.lower().split("x")] for s in args.sizes.split(",") if s],
        "tokens": args.tokens,
        "dtype": args.dtype or ("bfloat16" if cuda else "float32"),
        "device": args.device,
        "warmup": args.warmup if args.warmup is not None else (3 if cuda else 1),
        "iters": args.iters if args.iters is not None else (20 if cuda else 2),
        "label_smoothing": args.label_smoothing,
        "methods": [m for m in args.methods.split(",") if m],
        "seed": args.seed,
        "threads": args.threads,
    }
    return settings, Path(args.out)


def _main() -> None:
    parser = argparse.ArgumentParser(description="measure one benchmark case and print it as JSON")
    parser.add_argument("--one", required=True, help="JSON dict of measure() arguments")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(measure_memory(**json.loads(args.one))))


if __name__ == "__main__":
    _main()
