"""Peak memory and time of one SFT optimizer step on a real model, per loss implementation (``loss_impl``).

One step = ``lmcal.sft.train.response_loss`` (the SFT loss exactly as training computes it) + backward + AdamW
step, on a batch of seeded random token ids with every position supervised. Each implementation runs in a fresh
process. There a warm-up step first allocates the gradients and AdamW state; then peak memory is measured with
``lmcal.losses.benchmark``'s CPU method (VmHWM after ``clear_refs`` minus the RSS before, after ``malloc_trim``):
``fwd_bwd_peak_mb`` is what the loss and backward add on top of weights, gradients and optimizer state,
``step_peak_mb`` the same with the AdamW update, ``process_peak_mb`` the whole process's high-water mark
(weights, AdamW state, warm-up included). ``step_s`` / ``step_cpu_s`` time one more step on its own.

    python -m lmcal.sft.step_memory --model results/models/gemma3-270m --impls torch,chunked --out sft_step.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from lmcal.losses.benchmark import cpu_peak_mb, rss_mb


def measure_step(model_dir: str, impl: str, batch: int, length: int, beta: float, seed: int = 0) -> dict:
    from lmcal.models import store
    from lmcal.sft import train as sft

    model, _ = store.load_model(model_dir)
    model.train()
    cfg = sft.SFTConfig(lr=2e-5, label_smoothing=beta, loss_impl=impl, seed=seed)
    opt = sft.make_optimizer(model, cfg)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, int(model.config.vocab_size), (batch, length), generator=g)
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}

    def forward_backward() -> float:
        loss, n = sft.response_loss(model, data, cfg)
        (loss / n).backward()
        return float(loss.detach()) / n

    def step() -> float:
        value = forward_backward()
        opt.step()
        opt.zero_grad(set_to_none=False)  # keep the gradient buffers, as a training loop does between steps
        return value

    first = step()
    _, loss_peak = cpu_peak_mb(forward_backward)  # the loss and the model's backward only
    opt.zero_grad(set_to_none=False)
    second, step_peak = cpu_peak_mb(step)  # ... plus the AdamW update
    t0, c0 = time.perf_counter(), time.process_time()
    step()  # timed on its own: the peak measurements trim the heap first, which costs page faults
    cpu_s = time.process_time() - c0  # CPU seconds: steadier than wall time on a shared machine
    return {"impl": impl, "batch": batch, "length": length, "label_smoothing": beta,
            "fwd_bwd_peak_mb": loss_peak, "step_peak_mb": step_peak, "process_peak_mb": rss_mb("VmHWM"),
            "step_s": time.perf_counter() - t0, "step_cpu_s": cpu_s, "loss_first": first, "loss_second": second,
            "vocab_size": int(model.config.vocab_size), "hidden_size": int(model.config.hidden_size),
            "threads": torch.get_num_threads()}


def measure_isolated(args: argparse.Namespace, impl: str) -> dict:
    """``measure_step`` in a fresh process: each implementation's high-water mark is its own."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "lmcal.sft.step_memory", "--one", impl, "--model", args.model,
           "--batch", str(args.batch), "--length", str(args.length), "--beta", str(args.beta),
           "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"step_memory {impl}: {(proc.stderr.strip().splitlines() or ['?'])[-1][:300]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="local model directory (results/models/<name>)")
    p.add_argument("--impls", default="torch,chunked", help="comma-separated loss_impl values")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=48)
    p.add_argument("--beta", type=float, default=0.1, help="label smoothing")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="JSON file for the rows (written atomically)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process: one implementation
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure_step(args.model, args.one, args.batch, args.length, args.beta)))
        return
    rows = [measure_isolated(args, impl) for impl in args.impls.split(",")]
    by = {r["impl"]: r for r in rows}
    if "torch" in by:
        for r in rows:
            for key in ("fwd_bwd_peak_mb", "step_peak_mb", "process_peak_mb", "step_s", "step_cpu_s"):
                r[key.replace("_mb", "") + "_vs_torch"] = r[key] / by["torch"][key]
    for r in rows:
        print(json.dumps(r))
    if args.out:
        from lmcal.core import io

        io.write_json({"method": __doc__.split("\n\n")[1].replace("\n", " "), "rows": rows}, args.out)


if __name__ == "__main__":
    main()
