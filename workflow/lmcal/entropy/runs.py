"""The entropy study's job entry points: build prompt sets, sample with exact entropy, score the human
continuations; each writes parquet plus a JSON sidecar per (dataset, decode).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lmcal.core import io
from lmcal.core.paths import output_key
from lmcal.entropy.protocol import build_prompts, context_limit
from lmcal.lm.decode import DecodeConfig
from lmcal.lm.padding import pad_token_id
from lmcal.lm.sampling import generate_samples
from lmcal.lm.scoring import score_documents_multi
from lmcal.models.store import weights_record, weights_stamp


def run_sampling(model_dir: str | os.PathLike, prompt_files: Sequence[str | os.PathLike],
                 outputs: Sequence[str | os.PathLike], *, decodes: dict[str, dict[str, Any]], seed: int,
                 max_new_tokens: int, batch_size: int, shard_root: str | os.PathLike,
                 shard_size: int | None = None, samples_per_prompt: int = 1,
                 sample_range: tuple[int, int] | None = None) -> dict[str, Any]:
    """Sample every (dataset, decode) whose ``.../data~{dataset}/decode~{decode}.parquet`` is in ``outputs``,
    writing the parquet and a ``.json`` sidecar beside it. Shards live under ``shard_root`` until the whole job
    has finished, so a rerun after a crash re-merges finished pairs and resumes the interrupted one.
    ``sample_range`` (lo, hi): only those sample indices (granularity: shard; `gather` merges the parts)."""
    import time

    from lmcal.models.store import load_model, load_model_info

    prompt_files, outputs = _paths(prompt_files), _paths(outputs)
    model, tok = load_model(model_dir)
    info = load_model_info(model_dir)
    record = weights_record(model_dir, model)
    prompts_by_dataset = {output_key(p)[0]: Path(p) for p in prompt_files if str(p).endswith(".parquet")}
    pad = pad_token_id(tok)
    summary = {}
    for out in (Path(o) for o in outputs if str(o).endswith(".parquet")):
        dataset, name = output_key(out)
        prompts = pd.read_parquet(prompts_by_dataset[dataset])
        check_context(prompts["prompt_len"], max_new_tokens, info, f"{prompts_by_dataset[dataset]}")
        decode = DecodeConfig.from_dict(decodes[name])
        t0 = time.perf_counter()
        df = generate_samples(model, [list(p) for p in prompts["prompt_ids"]], prompts["doc_id"].tolist(),
                              decode=decode, max_new_tokens=max_new_tokens, eos_token_ids=info.eos_token_ids,
                              seed=seed, shard_dir=Path(shard_root) / f"data~{dataset}" / f"decode~{name}",
                              batch_size=batch_size, shard_size=shard_size, samples_per_prompt=samples_per_prompt,
                              pad_token_id=pad, keep_shards=True, fingerprint_extra=weights_stamp(model_dir),
                              sample_range=sample_range)
        wall = time.perf_counter() - t0
        io.write_parquet(df, out)
        stats = sample_stats(df, wall)
        io.write_json({**record, "dataset": dataset, "decode_name": name, "decode": decode.to_dict(), "seed": seed,
                       "max_new_tokens": max_new_tokens, "batch_size": batch_size, "shard_size": shard_size,
                       "samples_per_prompt": samples_per_prompt, "eos_token_ids": info.eos_token_ids,
                       "sampler": "inverse-CDF, numpy default_rng([seed, sample_idx]) per sample", **stats,
                       **({"sample_range": list(sample_range)} if sample_range else {})},
                      out.with_suffix(".json"))
        summary[f"{dataset}/{name}"] = stats
    shutil.rmtree(shard_root, ignore_errors=True)
    return {"weights": record, "runs": summary}


def run_scoring(model_dir, prompt_files: Sequence[str], outputs: Sequence[str], *,
                decodes: dict[str, dict[str, Any]], batch_size: int = 4, vocab_chunk: int | None = 8192,
                mixture_eps: float = 1e-3, doc_range: tuple[int, int] | None = None) -> dict[str, Any]:
    """Score the human continuations of every prompt set for every ``.../data~{d}/decode~{k}.parquet`` in
    ``outputs`` (plus a ``.json`` sidecar each); one body forward per batch serves all decodes of a dataset.
    ``doc_range`` (lo, hi): only those prompt rows (granularity: shard; `gather` merges the parts)."""
    import time
    from pathlib import Path

    from lmcal.core import io
    from lmcal.core.paths import output_key
    from lmcal.models.store import load_model, load_model_info, weights_record

    prompt_files, outputs = _paths(prompt_files), _paths(outputs)
    model, tok = load_model(model_dir)
    record = weights_record(model_dir, model)
    pad = pad_token_id(tok)
    wanted: dict[str, dict[str, Path]] = {}
    for out in (Path(o) for o in outputs if str(o).endswith(".parquet")):
        dataset, name = output_key(out)
        wanted.setdefault(dataset, {})[name] = out
    missing = set(wanted) - {output_key(p)[0] for p in prompt_files if str(p).endswith(".parquet")}
    if missing:
        raise ValueError(f"prompt_files: no prompt set for dataset(s) {sorted(missing)}")
    summary = {}
    for p in (Path(p) for p in prompt_files if str(p).endswith(".parquet")):
        (dataset,) = output_key(p)
        if dataset not in wanted:
            continue
        prompts = pd.read_parquet(p)
        if doc_range is not None:
            prompts = prompts.iloc[doc_range[0]:doc_range[1]]
        check_context(prompts["prompt_len"] + prompts["continuation_ids"].map(len), 0, load_model_info(model_dir), str(p))
        t0 = time.perf_counter()
        frames = score_documents_multi(
            model, [list(x) for x in prompts["prompt_ids"]], [list(x) for x in prompts["continuation_ids"]],
            prompts["doc_id"].tolist(), decodes={k: DecodeConfig.from_dict(decodes[k]) for k in wanted[dataset]},
            batch_size=batch_size, vocab_chunk=vocab_chunk, mixture_eps=mixture_eps, pad_token_id=pad)
        wall = time.perf_counter() - t0
        for name, df in frames.items():
            io.write_parquet(df, wanted[dataset][name])
            stats = human_stats(df, wall)
            io.write_json({**record, "dataset": dataset, "decode_name": name, "decode": decodes[name],
                           "batch_size": batch_size, "vocab_chunk": vocab_chunk, "mixture_eps": mixture_eps,
                           "logloss_finite": "-log((1-eps) p_decode + eps p_tempered), eps = mixture_eps", **stats,
                           **({"doc_range": list(doc_range)} if doc_range else {})},
                          wanted[dataset][name].with_suffix(".json"))
            summary[f"{dataset}/{name}"] = stats
    return {"weights": record, "runs": summary}


def run_prompts(model_dir: str | Path, documents: dict[str, str | Path], outputs: Sequence[str | Path], *,
                n: int, prompt_tokens: int, max_new_tokens: int, min_continuation: int, max_context: int | None,
                chat_template: str = "auto", instructions: dict[str, str] | None = None,
                doc_ids: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Build one prompt set per dataset for the model in ``model_dir``; write ``<out>.parquet`` + ``<out>.json``
    (selected ids and settings) for every parquet in ``outputs``. Returns per-dataset summary numbers."""
    from transformers import AutoTokenizer

    from lmcal.core import io
    from lmcal.models.store import load_model_info

    info = load_model_info(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    settings = dict(n=n, prompt_tokens=prompt_tokens, max_new_tokens=max_new_tokens,
                    min_continuation=min_continuation, max_context=max_context, chat_template=chat_template,
                    model_max_positions=context_limit(info))
    summary = {}
    for out in (Path(o) for o in outputs if str(o).endswith(".parquet")):
        (dataset,) = output_key(out)
        docs = pd.read_parquet(documents[dataset])
        df = build_prompts(docs, tok, instruction=(instructions or {}).get(dataset),
                           doc_ids=(doc_ids or {}).get(dataset), progress=True, **settings)
        io.write_parquet(df, out)
        io.write_json({"model": info.name, "dataset": dataset, "doc_ids": df["doc_id"].tolist(),
                       "settings": settings, "n_documents_seen": len(docs)}, out.with_suffix(".json"))
        summary[dataset] = {"n": len(df), "mean_prompt_len": float(df["prompt_len"].mean()),
                            "mean_continuation": float(df["n_continuation"].mean())}
    return summary


def _paths(files) -> list[Path]:
    """One path or a list of them (a rule's single named input arrives as a plain string)."""
    return [Path(files)] if isinstance(files, (str, os.PathLike)) else [Path(f) for f in files]


def _mean(arrays) -> float | None:
    flat = np.concatenate([np.asarray(a, dtype=np.float64) for a in arrays]) if len(arrays) else np.zeros(0)
    return float(flat.mean()) if flat.size else None


def sample_stats(df: pd.DataFrame, wall: float) -> dict[str, Any]:
    """The sidecar numbers of a samples frame (None where there are no samples: an empty last shard)."""
    tokens = int(df["gen_len"].sum())
    return {"n_samples": len(df), "generated_tokens": tokens, "wall_s": wall,
            "tokens_per_s": tokens / wall if wall > 0 else None, "mean_entropy": _mean(df["entropy"].to_list()),
            "mean_gen_len": float(df["gen_len"].mean()) if len(df) else None,
            "frac_eos": float(df["ended_eos"].mean()) if len(df) else None}


def human_stats(df: pd.DataFrame, wall: float) -> dict[str, Any]:
    """The sidecar numbers of a human-scoring frame (``wall`` covers every decode of the batch forwards)."""
    return {"n_documents": len(df), "scored_tokens": int(df["n_tokens"].sum()), "wall_s_all_decodes": wall,
            "mean_logloss_finite": _mean(df["logloss_finite"].to_list()),
            "mean_entropy": _mean(df["entropy"].to_list()),
            "frac_outside_kept": _mean(df["outside_kept"].to_list())}


def check_context(lengths: pd.Series, new_tokens: int, info, where: str) -> None:
    """Refuse sequences longer than the model's positions (a RoPE model would extrapolate silently).

    Prompt sets are built within the limit (lmcal.entropy.protocol.context_limit), so this fires only for a prompt
    file made for another model or other settings."""
    limit = context_limit(info)
    longest = int(lengths.max()) if len(lengths) else 0
    if limit is not None and longest + new_tokens > limit:
        raise ValueError(f"{where}: a prompt of {longest} tokens + {new_tokens} new tokens exceeds the "
                         f"{limit}-position context of model {info.name!r}; rebuild the prompts "
                         f"(delete {where} and rerun snakemake) or lower entropy.prompt_tokens / max_new_tokens")


def gather(parts: Sequence[str | os.PathLike], out: str | os.PathLike, *, kind: str) -> dict[str, Any]:
    """Merge the per-shard parquets of one (model, dataset, decode), in shard order, into ``out`` (+ sidecar).

    ``kind`` "samples" (rows must be sample_idx 0..n-1 exactly once) or "human" (document order kept). The
    merged frame equals the per-model job's; the sidecar is the first part's, with stats over the merged rows
    and the parts' summed wall time."""
    parts = [Path(p) for p in parts if str(p).endswith(".parquet")]
    frames = [pd.read_parquet(p) for p in parts]
    sidecars = [io.read_json(p.with_suffix(".json")) for p in parts]
    df = pd.concat(frames, ignore_index=True)
    if kind == "samples":
        if not (df["sample_idx"].to_numpy() == np.arange(len(df))).all():
            raise ValueError(f"{out}: parts {[str(p) for p in parts]} do not hold samples 0..{len(df) - 1} in order")
        stats = sample_stats(df, sum(s["wall_s"] for s in sidecars))
        drop = ("sample_range",)
    elif kind == "human":
        stats = human_stats(df, sum(s["wall_s_all_decodes"] for s in sidecars))
        drop = ("doc_range",)
    else:
        raise ValueError(f"kind must be 'samples' or 'human', got {kind!r}")
    io.write_parquet(df, out)
    meta = {k: v for k, v in sidecars[0].items() if k not in drop}
    io.write_json({**meta, **stats, "granularity": "shard", "n_parts": len(parts)}, Path(out).with_suffix(".json"))
    return stats
