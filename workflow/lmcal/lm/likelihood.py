"""One teacher-forced likelihood engine for any Hugging Face causal LM, with lm-evaluation-harness's verbs.

``LikelihoodEngine(model, tokenizer)`` offers

* ``loglikelihood([(context, continuation), ...]) -> [(sum log p, is_greedy), ...]`` and the per-token
  ``token_logprobs`` underneath it (callers that normalise by length or keep per-token values use that);
* ``loglikelihood_rolling([text, ...]) -> [sum log p, ...]``: disjoint windows (``rolling_windows``) that score
  every token once with as much left context as fits; token 0 is scored after the model's prefix token (BOS, else
  EOS), as lm-eval does;
* ``next_token_logprobs`` (the last-position variant: log p of candidate next tokens, e.g. answer letters) and
  ``shared_context_token_logprobs`` (many continuations of one context, the context run once);
* ``generate(contexts, max_new_tokens=..., until=...) -> [text, ...]``: greedy, batched, KV-cached.

Requests are token ids or text. Text is encoded without special tokens, a context and its continuation jointly
and then split (as lm-eval does) so the boundary token merges as in running text; ids are used as given. An empty
context becomes the prefix token. All numbers are natural-log probabilities of the model's own softmax.

Batching: rows are sorted longest first (similar lengths together, out-of-memory surfaces at once), left-padded
(`lmcal.lm.padding.left_pad`: every row ends at the last column, position ids come from the mask) and the LM head
runs only on the positions that are read (``logits_to_keep``). Too-long inputs lose their *oldest context*
tokens to fit ``max_length`` (default: the model's ``max_position_embeddings``); a continuation that alone does
not fit is an error. tests/test_likelihood.py checks all of this against one unpadded forward per pair.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from lmcal.lm.padding import left_pad, pad_token_id, right_pad

Tokens = Sequence[int]


def model_max_length(model) -> int | None:
    """The model's context limit (``max_position_embeddings``), or None when its config names none."""
    value = getattr(model.config, "max_position_embeddings", None)
    return int(value) if value else None


def truncate_context(ctx: Tokens, cont: Tokens, max_length: int | None) -> list[int]:
    """``ctx`` without its oldest tokens so that ``ctx + cont`` fits ``max_length`` (None: no limit)."""
    ctx = list(ctx)
    if max_length is not None and len(ctx) + len(cont) > max_length:
        if len(cont) >= max_length:
            raise ValueError(f"a continuation of {len(cont)} tokens does not fit max_length={max_length}")
        ctx = ctx[len(ctx) + len(cont) - max_length:]
    return ctx


def rolling_windows(ids: Tokens, prefix: Tokens, max_length: int) -> list[tuple[list[int], list[int]]]:
    """Disjoint windows that score every token once with as much left context as fits in ``max_length``."""
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    pairs, start = [], 0
    while start < len(ids):
        end = min(start + max_length - 1, len(ids))
        ctx = list(prefix) if start == 0 else list(ids[max(0, end - max_length):start])
        pairs.append((ctx, list(ids[start:end])))
        start = end
    return pairs


def keeps_logits(model) -> bool:
    """Whether the model's forward can skip the LM head on positions that are not read."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _item_batches(items: list[tuple[list[int], list[list[int]]]], batch_size: int) -> list[list[int]]:
    """Item indices grouped so each group holds at most ``batch_size`` continuations (one item at least)."""
    order = sorted(range(len(items)), key=lambda i: -len(items[i][0]))
    groups, current, rows = [], [], 0
    for i in order:
        n = len(items[i][1])
        if current and rows + n > batch_size:
            groups.append(current)
            current, rows = [], 0
        current.append(i)
        rows += n
    return groups + ([current] if current else [])


class LikelihoodEngine:
    """Batched teacher-forced log-probabilities and greedy generation (module docstring)."""

    def __init__(self, model, tokenizer=None, *, batch_size: int = 16, max_length: int | None = None,
                 pad_id: int | None = None, progress: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        if max_length is not None and max_length < 2:
            raise ValueError(f"max_length: expected >= 2, got {max_length}")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.progress = batch_size, progress
        self.max_length = max_length if max_length is not None else model_max_length(model)
        self.pad_id = int(pad_id) if pad_id is not None else (pad_token_id(tokenizer) if tokenizer is not None else 0)

    # ------------------------------------------------------------------ requests -> token ids

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise ValueError("text requests need a tokenizer; pass token ids or give the engine a tokenizer")
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prefix_token(self) -> list[int]:
        """What scores token 0 of a text without context: the BOS id, else the EOS id."""
        for t in (getattr(self.tokenizer, "bos_token_id", None), getattr(self.tokenizer, "eos_token_id", None)):
            if t is not None:
                return [int(t)]
        raise ValueError("an empty context needs a tokenizer with a BOS or EOS token (it predicts token 0)")

    def _pair_ids(self, context: Tokens | str, continuation: Tokens | str) -> tuple[list[int], list[int]]:
        if isinstance(context, str) != isinstance(continuation, str):
            raise ValueError("requests: context and continuation must both be text or both be token ids")
        if isinstance(context, str):
            whole, ctx = self.encode(context + continuation), self.encode(context)
            n_ctx = len(ctx) if whole[:len(ctx)] == ctx else len(self.encode(context.rstrip()))
            ctx, cont = whole[:n_ctx], whole[n_ctx:]
        else:
            ctx, cont = [int(t) for t in context], [int(t) for t in continuation]
        if not cont:
            raise ValueError(f"continuation {continuation!r} has no tokens")
        return truncate_context(ctx or self.prefix_token(), cont, self.max_length), cont

    def _context_ids(self, context: Tokens | str) -> list[int]:
        ids = self.encode(context) if isinstance(context, str) else [int(t) for t in context]
        return ids or self.prefix_token()

    # ------------------------------------------------------------------ teacher-forced scoring

    def _forward_tail(self, rows: list[list[int]], keep: int) -> torch.Tensor:
        """Float32 logits of the last ``keep`` positions of each left-padded row: shape (B, keep, V)."""
        ids, mask, pos = left_pad(rows, self.pad_id)
        kwargs = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device),
                  "position_ids": pos.to(self.device)}
        if keeps_logits(self.model):
            kwargs["logits_to_keep"] = keep
        return self.model(**kwargs).logits[:, -keep:, :].float()

    def _tail_scores(self, rows: list[list[int]], n_scored: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(log p, is_argmax) of the last ``n_scored[b]`` tokens of each row; subclasses change the distribution."""
        keep = max(n_scored) + 1
        logits = self._forward_tail(rows, keep)  # tail position keep-1-n+j predicts the row's token -n+j
        out = []
        for b, (row, n) in enumerate(zip(rows, n_scored)):
            z = logits[b, keep - 1 - n: keep - 1]
            target = torch.as_tensor(row[-n:], device=z.device).unsqueeze(1)
            z_t = z.gather(1, target).squeeze(1)
            lp = z_t - torch.logsumexp(z, dim=-1)
            out.append((lp.double().cpu().numpy(), (z_t >= z.max(dim=-1).values).cpu().numpy()))
        return out

    @torch.no_grad()
    def _score_pairs(self, pairs: list[tuple[list[int], list[int]]], desc: str) -> list[tuple[np.ndarray, np.ndarray]]:
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        out: list = [None] * len(pairs)
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc=desc, disable=not self.progress, unit="batch"):
            idx = order[start:start + self.batch_size]
            scores = self._tail_scores([pairs[i][0] + pairs[i][1] for i in idx], [len(pairs[i][1]) for i in idx])
            for i, s in zip(idx, scores):
                out[i] = s
        return out

    def token_logprobs(self, requests: Sequence[tuple[Tokens | str, Tokens | str]], *,
                       desc: str = "loglikelihood") -> list[np.ndarray]:
        """Per-token log p (float64, one array per request, the continuation's length)."""
        pairs = [self._pair_ids(c, x) for c, x in requests]
        return [lp for lp, _ in self._score_pairs(pairs, desc)]

    def loglikelihood(self, requests: Sequence[tuple[Tokens | str, Tokens | str]]) -> list[tuple[float, bool]]:
        """(sum of log p over the continuation, whether every continuation token is the argmax) per request."""
        pairs = [self._pair_ids(c, x) for c, x in requests]
        return [(float(lp.sum()), bool(g.all())) for lp, g in self._score_pairs(pairs, "loglikelihood")]

    def loglikelihood_rolling(self, texts: Sequence[Tokens | str]) -> list[float]:
        """Sum of log p of every token of each text (token ids or text), in disjoint max-context windows."""
        windows, owner = [], []
        for k, text in enumerate(texts):
            ids = self.encode(text) if isinstance(text, str) else [int(t) for t in text]
            prefix = self.prefix_token()
            limit = self.max_length if self.max_length is not None else len(ids) + len(prefix)
            for w in rolling_windows(ids, prefix, max(limit, 2)):
                windows.append(w)
                owner.append(k)
        totals = [0.0] * len(texts)
        for k, (lp, _) in zip(owner, self._score_pairs(windows, "rolling loglikelihood")):
            totals[k] += float(lp.sum())
        return totals

    @torch.no_grad()
    def next_token_logprobs(self, contexts: Sequence[Tokens | str],
                            candidates: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """log p(candidate | context) at the next position (full-vocabulary softmax), one array per context.

        A context longer than ``max_length`` keeps its last ``max_length`` tokens (the candidate is not fed in).
        """
        if len(contexts) != len(candidates):
            raise ValueError(f"candidates: {len(candidates)} candidate lists for {len(contexts)} contexts")
        rows = [self._context_ids(c) for c in contexts]
        if self.max_length is not None:
            rows = [r[-self.max_length:] for r in rows]
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        out: list = [None] * len(rows)
        for start in tqdm(range(0, len(order), self.batch_size), desc="next-token", disable=not self.progress):
            idx = order[start:start + self.batch_size]
            logp = torch.log_softmax(self._forward_tail([rows[i] for i in idx], 1)[:, 0], -1)
            for b, i in enumerate(idx):
                out[i] = logp[b, list(candidates[i])].double().cpu().numpy()
        return out

    @torch.no_grad()
    def shared_context_token_logprobs(self, items: Sequence[tuple[Tokens, Sequence[Tokens]]]
                                      ) -> list[list[np.ndarray]]:
        """Per-token log p of every continuation of every ``(context_ids, [continuation_ids, ...])`` item.

        The contexts of a batch run left-padded with a KV cache; the cache rows are then repeated for each
        continuation (``reorder_cache``) and the continuations run right-padded after them, so a context is paid
        once per item instead of once per continuation. The context is cut for the item's longest continuation.
        Equal to ``token_logprobs`` on each pair.
        """
        prepared = []
        for i, (ctx, conts) in enumerate(items):
            conts = [[int(t) for t in c] for c in conts]
            if not conts or any(len(c) == 0 for c in conts):
                raise ValueError(f"items: item {i} has no continuations or an empty one")
            ctx = [int(t) for t in ctx] or self.prefix_token()
            prepared.append((truncate_context(ctx, max(conts, key=len), self.max_length), conts))
        device = self.device
        out: list[list[np.ndarray]] = [[] for _ in prepared]
        groups = _item_batches(prepared, self.batch_size)
        for group in tqdm(groups, desc="shared-context", disable=not self.progress, unit="batch"):
            ids, mask, pos = left_pad([prepared[i][0] for i in group], self.pad_id)
            keep = {"logits_to_keep": 1} if keeps_logits(self.model) else {}
            first = self.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                               position_ids=pos.to(device), use_cache=True, **keep)
            owner = [b for b, i in enumerate(group) for _ in prepared[i][1]]
            conts = [c for i in group for c in prepared[i][1]]
            cache = first.past_key_values
            cache.reorder_cache(torch.tensor(owner, device=device))
            cont_ids, cont_mask = right_pad(conts, self.pad_id)
            owner_t = torch.tensor(owner)
            cont_pos = mask.sum(-1)[owner_t][:, None] + torch.arange(cont_ids.shape[1])[None, :]
            full_mask = torch.cat([mask[owner_t], cont_mask], -1)
            logits = self.model(input_ids=cont_ids.to(device), attention_mask=full_mask.to(device),
                                position_ids=cont_pos.to(device), past_key_values=cache, use_cache=True).logits
            # Token 0 of a continuation is predicted by its context's last position, token j by continuation j-1.
            z = torch.cat([first.logits[owner_t.to(device), -1:].float(), logits[:, :-1].float()], 1)
            logp = torch.log_softmax(z, -1)
            for r, (b, cont) in enumerate(zip(owner, conts)):
                lp = logp[r, :len(cont)].gather(-1, torch.tensor(cont, device=device)[:, None]).squeeze(-1)
                out[group[b]].append(lp.double().cpu().numpy())
        return out

    # ------------------------------------------------------------------ greedy generation

    @torch.no_grad()
    def generate(self, contexts: Sequence[Tokens | str], *, max_new_tokens: int,
                 until: str | Sequence[str] | None = None, eos_token_ids: Sequence[int] | None = None) -> list[str]:
        """Greedy continuations, decoded without special tokens and cut before the first ``until`` string.

        A row stops at an EOS id (default: the tokenizer's), at a stop string, or after ``max_new_tokens``.
        Contexts keep their last ``max_length - max_new_tokens`` tokens so the generation fits.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if self.tokenizer is None:
            raise ValueError("generate needs a tokenizer to decode its output")
        stops = [until] if isinstance(until, str) else list(until or [])
        if any(not s for s in stops):
            raise ValueError(f"until: stop strings must be non-empty, got {stops!r}")
        if eos_token_ids is None:
            eos_token_ids = [] if self.tokenizer.eos_token_id is None else [self.tokenizer.eos_token_id]
        rows = [self._context_ids(c) for c in contexts]
        if self.max_length is not None:
            room = self.max_length - max_new_tokens
            if room < 1:
                raise ValueError(f"max_new_tokens={max_new_tokens} leaves no context within {self.max_length}")
            rows = [r[-room:] for r in rows]
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        texts: list = [None] * len(rows)
        for start in tqdm(range(0, len(order), self.batch_size), desc="generate", disable=not self.progress):
            idx = order[start:start + self.batch_size]
            for i, toks in zip(idx, self._greedy_batch([rows[i] for i in idx], max_new_tokens,
                                                       set(map(int, eos_token_ids)), stops)):
                texts[i] = self._cut(self.tokenizer.decode(toks, skip_special_tokens=True), stops)
        return texts

    @staticmethod
    def _cut(text: str, stops: list[str]) -> str:
        for s in stops:
            text = text.split(s, 1)[0]
        return text

    def _greedy_batch(self, rows: list[list[int]], max_new_tokens: int, eos: set[int],
                      stops: list[str]) -> list[list[int]]:
        from transformers import DynamicCache

        ids, mask, pos = left_pad(rows, self.pad_id)
        device = self.device
        ids, mask, pos = ids.to(device), mask.to(device), pos.to(device)
        cache = DynamicCache(config=self.model.config)
        keep = {"logits_to_keep": 1} if keeps_logits(self.model) else {}
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                         use_cache=True, **keep)
        next_pos = pos[:, -1] + 1
        generated: list[list[int]] = [[] for _ in rows]
        done = [False] * len(rows)
        for step in range(max_new_tokens):
            tok = out.logits[:, -1, :].argmax(dim=-1)
            for b, t in enumerate(tok.tolist()):
                if done[b]:
                    continue
                generated[b].append(t)
                done[b] = t in eos or (bool(stops) and any(
                    s in self.tokenizer.decode(generated[b], skip_special_tokens=True) for s in stops))
            if all(done) or step == max_new_tokens - 1:
                break
            # Finished rows keep running (one batch shape) on padding; nothing they produce is read.
            tok = torch.where(torch.tensor(done, device=device), torch.full_like(tok, self.pad_id), tok)
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            out = self.model(input_ids=tok.unsqueeze(1), attention_mask=mask, position_ids=next_pos.unsqueeze(1),
                             past_key_values=cache, use_cache=True)
            next_pos = next_pos + 1
        return generated
