"""Batched ancestral sampling with a KV cache that records the exact entropy of every step.

At each step the sampler takes the fp32 logits of the position that predicts the next token, turns them into the
distribution it samples from (`DecodeConfig.apply`), and records, from that same tensor, the full-vocabulary
entropy (nats) and the log-probability of the token it drew. No second scoring pass is needed.

Determinism guarantees (CPU, same torch build and thread count):

* Sample ``i`` draws its uniforms from its own stream ``numpy.random.default_rng([seed, i])`` and turns each into a
  token by inverting the fp64 CDF of the step distribution, so its random numbers never depend on which other
  samples share its batch, on the batch size or on resuming. The same seed across decodes gives common random
  numbers (coupled samples), which lowers the variance of comparisons between temperatures.
* Shards hold fixed, consecutive ``sample_idx`` ranges processed in fixed batches, so a run that is killed and
  resumed from its last complete shard produces bit-identical output to an uninterrupted run.
* Across *different* batch sizes the logits can differ in the last float bits (other matmul shapes), so tokens
  are identical except where such a difference flips an inverse-CDF draw (rare), and entropies agree to ~1e-6.

A sequence ends after it emits an EOS id (the EOS token is kept: its step's entropy is a real step) or after
``max_new_tokens``; finished rows are dropped from the batch and its KV cache, and the batch stops when every
row has ended.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from lmcal.core import io
from lmcal.lm.decode import DecodeConfig, entropy
from lmcal.lm.future import FutureCalibration, adjust_log_probs, future_values, hidden_tap
from lmcal.lm.padding import left_pad

log = logging.getLogger(__name__)

SAMPLE_COLUMNS = ["doc_id", "sample_idx", "prompt_len", "gen_len", "ended_eos", "tokens", "entropy", "logprob"]
SHARD_RE = re.compile(r"^shard-(\d{5})\.parquet$")
MANIFEST = "manifest.json"


def sample_rng(seed: int, sample_idx: int) -> np.random.Generator:
    """The private random stream of one sample (independent of batching)."""
    return np.random.default_rng([int(seed), int(sample_idx)])


def future_rng(seed: int, sample_idx: int) -> np.random.Generator:
    """The stream a sample's future-entropy rollouts draw from (separate from its sampling stream)."""
    return np.random.default_rng([int(seed), int(sample_idx), 1])


def draw_from_log_probs(log_probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw per row: the first token whose cumulative probability exceeds ``u * total``.

    The CDF is accumulated in fp64 and scaled by its own total, so rounding cannot push the draw past the end;
    a zero-probability token can never be returned (its CDF equals its predecessor's).
    """
    cdf = torch.cumsum(log_probs.double().exp(), dim=-1)
    target = uniforms.double().unsqueeze(-1) * cdf[:, -1:]
    idx = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return idx.clamp_(max=log_probs.shape[-1] - 1)


@torch.inference_mode()
def sample_batch(
    model,
    prompts: Sequence[Sequence[int]],
    rngs: Sequence[np.random.Generator],
    *,
    decode: DecodeConfig,
    max_new_tokens: int,
    eos_token_ids: Iterable[int],
    pad_token_id: int = 0,
    stop_at_eos: bool = True,
    calibration: FutureCalibration | None = None,
    future_rngs: Sequence[np.random.Generator] | None = None,
) -> list[dict[str, Any]]:
    """Sample one continuation per prompt; per row: tokens, entropy (nats), logprob, ended_eos.

    With an active ``calibration`` (`lmcal.lm.future`, a != 0) each step samples the future-entropy adjusted
    distribution instead, and its entropy and log-probs are the ones recorded; rollouts draw from
    ``future_rngs`` (one per prompt), never from the sampling streams, so the draws stay coupled across methods.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if len(rngs) != len(prompts):
        raise ValueError(f"rngs: need one generator per prompt ({len(prompts)}), got {len(rngs)}")
    eos = torch.as_tensor(sorted({int(e) for e in eos_token_ids}), dtype=torch.long)
    calibrated = calibration is not None and calibration.active
    with hidden_tap(model, enabled=calibrated and calibration.kind == "head") as tap:  # head: F from lm_head's input
        return _sample_steps(model, prompts, rngs, decode, max_new_tokens, eos, pad_token_id, stop_at_eos,
                             calibration if calibrated else None, future_rngs, tap)


def _sample_steps(model, prompts, rngs, decode, max_new_tokens, eos, pad_token_id, stop_at_eos, calibration,
                  future_rngs, tap) -> list[dict[str, Any]]:
    """The body of `sample_batch` (``calibration`` is None or active; ``tap`` holds the final hidden state)."""
    from transformers import DynamicCache

    ids, mask, pos = left_pad(prompts, pad_token_id)
    n = len(prompts)
    rows = [{"tokens": [], "entropy": [], "logprob": [], "ended_eos": False} for _ in range(n)]
    alive = list(range(n))  # original row of each current batch row
    cache = DynamicCache(config=model.config)
    try:  # only the last position's logits are needed after the prompt
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
                    logits_to_keep=1)
    except TypeError:  # architectures without logits_to_keep
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
    next_pos = pos[:, -1] + 1
    for step in range(max_new_tokens):
        lp = decode.apply(out.logits[:, -1, :])
        if calibration is not None:
            frngs = None if future_rngs is None else [future_rngs[r] for r in alive]
            F = future_values(model, cache, mask, next_pos, lp, calibration, frngs, eos.tolist(), tap.last)
            lp = adjust_log_probs(lp, F, calibration.a)
        ent = entropy(lp)
        u = torch.tensor([rngs[r].random() for r in alive], dtype=torch.float64)
        tok = draw_from_log_probs(lp, u)
        tok_lp = lp.gather(1, tok.unsqueeze(1)).squeeze(1)
        done = torch.isin(tok, eos) if stop_at_eos else torch.zeros_like(tok, dtype=torch.bool)
        for r, t, e, lpj, d in zip(alive, tok.tolist(), ent.tolist(), tok_lp.tolist(), done.tolist()):
            rows[r]["tokens"].append(t)
            rows[r]["entropy"].append(e)
            rows[r]["logprob"].append(lpj)
            rows[r]["ended_eos"] = d
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        if bool(done.any()):  # drop finished rows from the batch and the cache
            keep = (~done).nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            mask, next_pos, tok = mask[keep], next_pos[keep], tok[keep]
            alive = [alive[k] for k in keep.tolist()]
        mask = torch.cat([mask, mask.new_ones((len(alive), 1))], dim=1)
        out = model(input_ids=tok.unsqueeze(1), attention_mask=mask, position_ids=next_pos.unsqueeze(1),
                    past_key_values=cache, use_cache=True)
        next_pos = next_pos + 1
    return rows


def _fingerprint(settings: dict[str, Any], prompts: Sequence[Sequence[int]], doc_ids: Sequence[str]) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for d, p in zip(doc_ids, prompts):
        h.update(str(d).encode() + b"\0" + np.asarray(p, dtype=np.int64).tobytes())
    return h.hexdigest()


def _complete_shards(shard_dir: Path) -> dict[int, Path]:
    return {int(m.group(1)): p for p in shard_dir.iterdir() if (m := SHARD_RE.match(p.name))}


def prepare_shard_dir(shard_dir: str | os.PathLike, fingerprint: str) -> Path:
    """Create ``shard_dir``, or reuse it if it holds shards of the same job; stale shards are removed."""
    shard_dir = Path(shard_dir)
    manifest = shard_dir / MANIFEST
    if shard_dir.exists():
        old = io.read_json(manifest).get("fingerprint") if manifest.exists() else None
        if old == fingerprint:
            return shard_dir
        log.warning("shard dir %s belongs to other settings; discarding its shards", shard_dir)
        shutil.rmtree(shard_dir)
    shard_dir.mkdir(parents=True)
    io.write_json({"fingerprint": fingerprint}, manifest)
    return shard_dir


def generate_samples(
    model,
    prompts: Sequence[Sequence[int]],
    doc_ids: Sequence[str],
    *,
    decode: DecodeConfig,
    max_new_tokens: int,
    eos_token_ids: Iterable[int],
    seed: int,
    shard_dir: str | os.PathLike,
    batch_size: int = 16,
    shard_size: int | None = None,
    samples_per_prompt: int = 1,
    pad_token_id: int = 0,
    stop_at_eos: bool = True,
    keep_shards: bool = False,
    progress: bool = True,
    fingerprint_extra: dict[str, Any] | None = None,
    sample_range: tuple[int, int] | None = None,
    calibration: FutureCalibration | None = None,
) -> pd.DataFrame:
    """Sample ``samples_per_prompt`` continuations per prompt, shard by shard, resuming finished shards.

    ``sample_range = (lo, hi)`` draws only samples lo..hi-1 (a cluster job's share; shards of ``shard_size``
    start at lo, so with lo a multiple of ``shard_size`` the batches, hence the rows, equal a full run's).

    Sample ``sample_idx = prompt_index * samples_per_prompt + j``. Returns one row per sample with
    `SAMPLE_COLUMNS`, ordered by ``sample_idx``; ``gen_len`` counts generated tokens including a final EOS.
    Shards are reused only if settings, prompts and ``fingerprint_extra`` (e.g. the weight files) all match.
    """
    if len(prompts) != len(doc_ids):
        raise ValueError(f"doc_ids: need one per prompt ({len(prompts)}), got {len(doc_ids)}")
    if batch_size < 1 or samples_per_prompt < 1:
        raise ValueError(f"batch_size and samples_per_prompt must be >= 1, got {batch_size}, {samples_per_prompt}")
    shard_size = shard_size or batch_size
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    eos_token_ids = sorted({int(e) for e in eos_token_ids})
    settings = dict(decode=decode.to_dict(), max_new_tokens=max_new_tokens, eos_token_ids=eos_token_ids,
                    seed=seed, batch_size=batch_size, shard_size=shard_size,
                    samples_per_prompt=samples_per_prompt, pad_token_id=pad_token_id, stop_at_eos=stop_at_eos,
                    extra=fingerprint_extra or {})
    if calibration is not None and calibration.active:  # only then: plain runs keep their fingerprint
        settings["calibration"] = calibration.to_dict()
    n_all = len(prompts) * samples_per_prompt
    lo, hi = (0, n_all) if sample_range is None else (max(0, sample_range[0]), min(n_all, sample_range[1]))
    if sample_range is not None:  # only then: shards of existing full runs keep their fingerprint
        settings["sample_range"] = [lo, hi]
    shard_dir = prepare_shard_dir(shard_dir, _fingerprint(settings, prompts, doc_ids))
    n_total = max(0, hi - lo)
    n_shards = -(-n_total // shard_size)
    done = _complete_shards(shard_dir)
    bar = tqdm(total=n_total, desc="sampling", unit="seq", disable=not progress)
    bar.update(sum(min(shard_size, n_total - k * shard_size) for k in done if k < n_shards))
    for k in range(n_shards):
        if k in done:
            continue
        idx = list(range(lo + k * shard_size, lo + min((k + 1) * shard_size, n_total)))
        records = []
        for b in range(0, len(idx), batch_size):
            batch = idx[b:b + batch_size]
            batch_prompts = [prompts[i // samples_per_prompt] for i in batch]
            rows = sample_batch(model, batch_prompts, [sample_rng(seed, i) for i in batch], decode=decode,
                                max_new_tokens=max_new_tokens, eos_token_ids=eos_token_ids,
                                pad_token_id=pad_token_id, stop_at_eos=stop_at_eos, calibration=calibration,
                                future_rngs=[future_rng(seed, i) for i in batch])
            for i, p, r in zip(batch, batch_prompts, rows):
                records.append({"doc_id": str(doc_ids[i // samples_per_prompt]), "sample_idx": i,
                                "prompt_len": len(p), "gen_len": len(r["tokens"]), **r})
            bar.update(len(batch))
        io.write_parquet(samples_frame(records), shard_dir / f"shard-{k:05d}.parquet")
    bar.close()
    df = merge_shards(shard_dir, n_shards)
    if len(df) != n_total or not (df["sample_idx"].to_numpy() == np.arange(lo, lo + n_total)).all():
        raise RuntimeError(f"shards in {shard_dir} do not cover samples {lo}..{lo + n_total - 1} exactly once")
    if not keep_shards:
        shutil.rmtree(shard_dir, ignore_errors=True)
    return df


def samples_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Records -> DataFrame with the contract's column order and dtypes (lists as int64 / float64)."""
    df = pd.DataFrame.from_records(records, columns=SAMPLE_COLUMNS)
    df["tokens"] = [np.asarray(t, dtype=np.int64) for t in df["tokens"]]
    df["entropy"] = [np.asarray(t, dtype=np.float64) for t in df["entropy"]]
    df["logprob"] = [np.asarray(t, dtype=np.float64) for t in df["logprob"]]
    return df.astype({"sample_idx": "int64", "prompt_len": "int64", "gen_len": "int64", "ended_eos": "bool"})


def merge_shards(shard_dir: str | os.PathLike, n_shards: int) -> pd.DataFrame:
    """Concatenate shards 0..n_shards-1 in order; a missing shard is an error."""
    shard_dir = Path(shard_dir)
    missing = [k for k in range(n_shards) if not (shard_dir / f"shard-{k:05d}.parquet").exists()]
    if missing:
        raise FileNotFoundError(f"shards missing in {shard_dir}: {missing[:5]}")
    frames = [pd.read_parquet(shard_dir / f"shard-{k:05d}.parquet") for k in range(n_shards)]
    if not frames:  # an empty sample range
        return samples_frame([])
    return pd.concat(frames, ignore_index=True).sort_values("sample_idx", kind="stable").reset_index(drop=True)
