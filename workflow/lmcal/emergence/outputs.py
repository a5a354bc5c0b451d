"""Model outputs that the re-scorer turns into metrics: stored once, scored many times.

For every evaluation item: the greedy generation (text cut at STOP and its token ids), the teacher-forced
log-probability of every target token and of STOP after the target, and, for multiple-choice items, the summed
log-probability of each choice followed by STOP. Also PassUntil-style sampling (many temperature-1 samples per
item until enough hits). No metric is computed here, so a metric change never reruns a model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from lmcal.emergence.tasks import STOP
from lmcal.lm.likelihood import LikelihoodEngine
from lmcal.lm.padding import left_pad, pad_token_id


def _encode(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"]


def continuation_logprobs(
    model, tokenizer, prompts: Sequence[str], continuations: Sequence[str], batch_size: int = 64
) -> list[np.ndarray]:
    """Teacher-forced log p (nats) of each continuation token given its prompt, one array per pair.

    Prompt and continuation are tokenised separately and concatenated (as lm-eval does), so the scored tokens
    are exactly the continuation's own tokens. Scored by the shared engine (``lmcal.lm.likelihood``).
    """
    if len(prompts) != len(continuations):
        raise ValueError(
            f"prompts and continuations differ in length: {len(prompts)} vs {len(continuations)}"
        )
    p_ids, c_ids = _encode(tokenizer, prompts), _encode(tokenizer, continuations)
    if any(len(p) == 0 for p in p_ids):
        raise ValueError("prompts: every prompt needs at least one token (the first target token's context)")
    engine = LikelihoodEngine(model, tokenizer, batch_size=batch_size)
    return engine.token_logprobs(list(zip(p_ids, c_ids)), desc="target log-probs")


def cut_at_stop(text: str) -> str:
    return text.split(STOP, 1)[0]


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    cut: bool = True,
) -> list[str]:
    """Continuations of ``prompts`` (greedy, or pure ancestral sampling: no top-k/top-p), cut at STOP unless
    ``cut`` is False; a row also ends at the tokenizer's EOS. Special tokens (EOS, padding) are dropped from the
    text. Greedy runs on the shared engine (``LikelihoodEngine.generate``, which also stops a row at STOP when
    cutting); sampling runs ``model.generate`` seeded by ``torch.manual_seed(seed)``, so a seed reproduces it."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    if not do_sample:
        engine = LikelihoodEngine(model, tokenizer, batch_size=batch_size)
        return engine.generate(_encode(tokenizer, prompts), max_new_tokens=max_new_tokens,
                               until=[STOP] if cut else None, eos_token_ids=eos)
    pad = pad_token_id(tokenizer)
    ids = _encode(tokenizer, prompts)
    texts: list[str] = []
    torch.manual_seed(seed)
    for start in range(0, len(ids), batch_size):
        x, mask, _ = left_pad(ids[start : start + batch_size], pad)  # generation continues right after each prompt
        out = model.generate(input_ids=x, attention_mask=mask, max_new_tokens=max_new_tokens, pad_token_id=pad,
                             eos_token_id=tokenizer.eos_token_id, do_sample=True, temperature=temperature,
                             top_k=0, top_p=1.0)
        decoded = tokenizer.batch_decode(out[:, x.shape[1]:], skip_special_tokens=True)
        texts += [cut_at_stop(t) for t in decoded] if cut else decoded
    return texts


def item_outputs(
    model, tokenizer, items: pd.DataFrame, batch_size: int = 64, progress: bool = False
) -> pd.DataFrame:
    """Greedy generations and teacher-forced log-probs for every item (columns see module docstring).

    Columns added to the item keys: generation (text before STOP), gen_ids / target_ids (token ids of the
    generation and of the target, tokenised alone), target_logprobs (per target token, nats), stop_logprob
    (log p(STOP | prompt + target)), choice_logprobs (summed log p of "choice + STOP" per MC choice).
    """
    need = {"item_id", "prompt", "target", "choices"}
    if missing := need - set(items.columns):
        raise ValueError(f"items: missing columns {sorted(missing)}")
    items = items.reset_index(drop=True)
    target_ids = _encode(tokenizer, items["target"])
    generations = [""] * len(items)
    # Group by target length so each generate call stops soon after its longest target.
    groups = items.groupby(items["target"].map(len) // 4, sort=True).indices
    for _, idx in tqdm(groups.items(), desc="generate", disable=not progress):
        limit = max(len(target_ids[i]) for i in idx) + 2
        texts = generate(model, tokenizer, items["prompt"].iloc[idx].tolist(), limit, batch_size=batch_size)
        for i, t in zip(idx, texts):
            generations[i] = t
    full = continuation_logprobs(model, tokenizer, items["prompt"], items["target"] + STOP, batch_size)
    n_stop = len(_encode(tokenizer, [STOP])[0])
    mc_rows = [(i, j, c) for i, cs in enumerate(items["choices"]) for j, c in enumerate(cs)]
    choice_lp = [[0.0] * len(cs) for cs in items["choices"]]
    if mc_rows:
        lps = continuation_logprobs(
            model,
            tokenizer,
            [items["prompt"].iloc[i] for i, _, _ in mc_rows],
            [c + STOP for *_, c in mc_rows],
            batch_size,
        )
        for (i, j, _), lp in zip(mc_rows, lps):
            choice_lp[i][j] = float(lp.sum())
    out = items.drop(columns=["prompt"]).copy()
    out["generation"] = generations
    out["gen_ids"] = [list(map(int, g)) for g in _encode(tokenizer, generations)]
    out["target_ids"] = [list(map(int, t)) for t in target_ids]
    # Separately tokenised "target + STOP" may merge tokens at the boundary (BPE); the split below keeps the
    # last n_stop tokens as STOP, which is exact for the character tokenizer.
    out["target_logprobs"] = [lp[:-n_stop].tolist() for lp in full]
    out["stop_logprob"] = [float(lp[-n_stop:].sum()) for lp in full]
    out["choice_logprobs"] = choice_lp
    return out


def sample_until(
    model,
    tokenizer,
    items: pd.DataFrame,
    *,
    budget: int,
    chunk: int,
    min_hits: int = 1,
    temperature: float = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """PassUntil sampling: per item, draw ``chunk`` samples at a time until ``min_hits`` exact matches or
    ``budget`` samples. Returns item_id, n_samples, n_hits and the exact reference probability
    p_exact = exp(Σ log p(target) + log p(STOP | target)) that the hit rate estimates at temperature 1.
    """
    if budget < 1 or chunk < 1 or min_hits < 1:
        raise ValueError(f"budget, chunk and min_hits must be >= 1, got {budget}, {chunk}, {min_hits}")
    items = items.reset_index(drop=True)
    full = continuation_logprobs(model, tokenizer, items["prompt"], items["target"] + STOP)
    rows = []
    for i, item in tqdm(items.iterrows(), total=len(items), desc="pass-until", disable=not progress):
        limit = len(_encode(tokenizer, [item["target"]])[0]) + 1
        n, hits = 0, 0
        while n < budget and hits < min_hits:
            k = min(chunk, budget - n)
            texts = generate(
                model,
                tokenizer,
                [item["prompt"]] * k,
                limit,
                do_sample=True,
                temperature=temperature,
                batch_size=k,
                seed=seed + 7919 * i + n,
                cut=False,
            )
            # A hit is the target followed by STOP, the event whose probability p_exact is.
            hits += sum(t.startswith(item["target"] + STOP) for t in texts)
            n += k
        rows.append(
            dict(item_id=item["item_id"], n_samples=n, n_hits=hits, p_exact=float(np.exp(full[i].sum())))
        )
    return pd.DataFrame(rows)
