"""Rough GPU-hours of each entropy and SFT job, from the config alone (parse-time light: no torch).

Used to size jobs for a cluster time limit (`entropy.granularity: shard`, `entropy.shard_samples`). Assumptions,
stated so an estimate can be redone with other numbers:

* FLOPs: a forward pass costs 2·N FLOPs per token, training 6·N (N = parameters; attention FLOPs are ignored,
  which underestimates long contexts by roughly n_ctx / (6·hidden)).
* Throughput: `PEAK_FLOPS` (one H100 SXM, bf16 dense, 989 TFLOP/s) times a model-FLOP utilisation `MFU` per kind:
  sampling 5% (token-by-token KV-cache decoding in eager PyTorch is memory-bound), scoring and training 30%.
* N: the measured count once results/models/<m>/model_info.json exists is the better number; here N is the
  nominal size in the model's name or hub id ("72b", "410m"), or for a ladder model 12·layers·hidden² plus the
  embedding (vocab·hidden).
* Sampling tokens per (dataset, decode) = samples × (prompt_tokens + max_new_tokens) (every sample runs to
  max_new_tokens: an upper bound when EOS ends samples early); scoring tokens per dataset = documents × (prompt +
  continuation), once for all decodes.
"""

from __future__ import annotations

import re
from typing import Any

PEAK_FLOPS = 989e12
MFU = {"sample": 0.05, "score": 0.30, "train": 0.30}
_SIZE = re.compile(r"(?<![a-z0-9.])(\d+(?:\.\d+)?)([mb])(?![a-z])", re.IGNORECASE)


def nominal_params(name: str, config: dict[str, Any]) -> float:
    """Parameter count of model ``name`` as the config describes it (see the module notes)."""
    if name.startswith("ladder-") and name[7:] in config.get("ladder", {}).get("sizes", {}):
        arch = config["ladder"]["sizes"][name[7:]]
        return 12 * arch["layers"] * arch["hidden"] ** 2 + config["ladder"].get("vocab_size", 0) * arch["hidden"]
    base = name.split("--sft-")[0]
    spec = config.get("models", {}).get(base, {})
    for text in (base, str(spec.get("id", ""))):
        m = _SIZE.search(text.lower().replace("_", "-"))
        if m:
            return float(m.group(1)) * (1e6 if m.group(2).lower() == "m" else 1e9)
    raise ValueError(f"model {name!r}: no size in its name or hub id; cannot estimate its cost")


def gpu_hours(flops_per_token: float, tokens: float, kind: str) -> float:
    return flops_per_token * tokens / (PEAK_FLOPS * MFU[kind]) / 3600


def entropy_jobs(config: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per entropy_sample job (granularity: model; it samples and scores, so its tokens and GPU-hours are
    the sum of both) or per entropy_sample_part / entropy_score_part job (granularity: shard):
    rule, job, tokens, params, gpu_hours."""
    ent = config["entropy"]
    datasets, decodes = list(ent["datasets"]), list(ent["decodes"])
    seq = ent["prompt_tokens"] + ent["max_new_tokens"]
    samples = ent["n_samples"] * ent.get("samples_per_prompt", 1)
    shard = ent.get("granularity", "model") == "shard"
    rows = []
    for model in ent["models"]:
        n = nominal_params(model, config)

        def add(rule: str, job: str, tokens: float, kind: str, n: float = n) -> None:
            rows.append({"rule": rule, "job": job, "tokens": tokens, "params": n,
                         "gpu_hours": gpu_hours(2 * n, tokens, kind)})

        if not shard:
            sample_tokens = samples * seq * len(datasets) * len(decodes)
            score_tokens = ent["n_samples"] * seq * len(datasets)
            rows.append({"rule": "entropy_sample", "job": model, "tokens": sample_tokens + score_tokens, "params": n,
                         "gpu_hours": gpu_hours(2 * n, sample_tokens, "sample")
                         + gpu_hours(2 * n, score_tokens, "score")})
            continue
        size = ent["shard_samples"]
        for d in datasets:
            for lo in range(0, samples, size):
                for k in decodes:
                    add("entropy_sample_part", f"{model}/{d}/{k}/{lo // size}", min(size, samples - lo) * seq,
                        "sample")
            for lo in range(0, ent["n_samples"], size):
                add("entropy_score_part", f"{model}/{d}/{lo // size}", min(size, ent["n_samples"] - lo) * seq, "score")
    return rows


def sft_jobs(runs: list[dict[str, Any]], config: dict[str, Any], n_examples: dict[str, int]) -> list[dict[str, Any]]:
    """One row per sft_train job of ``runs`` (lmcal.workflow.sft.plan_runs). Tokens = optimizer steps × batch ×
    grad_accum × max_length, or with max_steps null epochs × examples × max_length (``n_examples``: examples of
    each instruction data set; every example counted at max_length, an upper bound)."""
    rows = []
    for run in runs:
        t = run["train"]
        if t.get("max_steps"):
            tokens = t["max_steps"] * t["batch_size"] * t.get("grad_accum", 1) * run["max_length"]
        else:
            tokens = t.get("epochs", 1) * n_examples[run["data"]] * run["max_length"]
        n = nominal_params(run["base"], config)
        rows.append({"rule": "sft_train", "job": run["name"], "tokens": tokens, "params": n,
                     "gpu_hours": gpu_hours(6 * n, tokens, "train")})
    return rows


def largest(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The costliest job of ``rows``."""
    return max(rows, key=lambda r: r["gpu_hours"])
