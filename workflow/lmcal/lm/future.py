"""Future-entropy estimators and the calibrated next-token distribution (spec entropy-calibration §6).

The adjusted model is  log p~(v|c) = (1 + a) log p^(v|c) - a F(c, v) - log Z(c),  where F(c, v) is the entropy
the model accumulates after choosing v. F is estimated for the ``top_k`` most likely candidates only:

* ``lookahead`` (Braverman et al. 2020, one step): F(c, v) = H(p^(.|c, v)), exact, from one batched forward of
  the k candidates on a branched copy of the KV cache (the sampler's own cache is never modified).
* ``rollout``: Monte Carlo h-step future entropy: for each candidate, ``n_rollouts`` continuations of
  ``horizon`` tokens are sampled from p^ and the exact per-step entropies along each are summed (steps after an
  EOS count 0); the mean over rollouts is F. With ``horizon = 1`` it equals ``lookahead`` exactly.
* ``head``: a learned linear head on the final hidden state h (what feeds lm_head) gives F^(c, v) = W_v . h + b_v
  for **every** v at once (`lmcal.lm.future_head`; trained on rollout labels). No fill-in: the head's own value
  is used for the whole vocabulary (``top_k`` is unused); tokens it never saw labelled keep its initial value,
  the mean training label (see `lmcal.lm.future_head.fit_head`).

**Fill-in for the rest of the vocabulary:** every token outside the top-k gets the p^-weighted mean of the top-k
values, F_fill = Σ_{v∈topk} p^(v) F(v) / Σ_{v∈topk} p^(v). Why: it is the model's own expectation of the future
entropy over the candidates it can see, so the tail is neither rewarded nor punished for futures nobody
computed: relative to one another, tail tokens move only through the (1+a) sharpening (exactly temperature),
while inside the top-k each candidate keeps its own F (unlike the 2019 prototype that overwrote them with
their mean, which makes the adjustment a no-op inside the top-k). The future steps are scored and rolled out
under the model's raw softmax (tau = 1, no truncation): F is a fixed estimator, so log loss is convex in a.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from lmcal.lm.decode import entropy

KINDS = ("lookahead", "rollout", "head")


@dataclass(frozen=True)
class FutureCalibration:
    """The adjusted sampler's settings: estimator kind, its size, and the fitted coefficient ``a``."""

    a: float = 0.0
    kind: str = "lookahead"
    top_k: int = 4
    n_rollouts: int = 4
    horizon: int = 4
    head: Any = field(default=None, compare=False, repr=False)  # a FutureHead (kind head only)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"future estimator kind must be one of {KINDS}, got {self.kind!r}")
        if (self.kind == "head") != (self.head is not None):
            raise ValueError(f"future estimator kind {self.kind!r}: a head is given exactly when kind is 'head' "
                             f"(got head={type(self.head).__name__}); load one with lmcal.lm.future_head.load_head")
        if not np.isfinite(self.a) or self.a <= -1:
            raise ValueError(f"a must be a finite number > -1 (1 + a is an inverse temperature), got {self.a!r}")
        for name in ("top_k", "n_rollouts", "horizon"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")

    @property
    def active(self) -> bool:
        """a = 0 is the base model: the sampler then skips the estimator and reproduces plain sampling."""
        return self.a != 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able settings; a head is named by its shape and weight digest (it enters sample fingerprints)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "head"}
        if self.head is not None:
            d["head"] = self.head.describe()
        return d


class HiddenTap:
    """Records the last-position input of the model's output layer (the final hidden state after the final norm,
    exactly what lm_head sees) on every forward while active; ``last`` is (B, D) fp32 of the latest forward."""

    def __init__(self) -> None:
        self.last: torch.Tensor | None = None

    def __call__(self, module, inputs) -> None:
        self.last = inputs[0][:, -1, :].float()


@contextmanager
def hidden_tap(model, enabled: bool = True):
    """A `HiddenTap` hooked on ``model.get_output_embeddings()`` for the block (no hook when not ``enabled``)."""
    tap, out = HiddenTap(), model.get_output_embeddings() if enabled else None
    if enabled and out is None:
        raise ValueError(f"kind head: {type(model).__name__} has no output embedding layer to read the hidden state of")
    handle = out.register_forward_pre_hook(tap) if enabled else None
    try:
        yield tap
    finally:
        if handle is not None:
            handle.remove()


def branch_cache(cache, repeats: int):
    """A copy of a DynamicCache with every row repeated ``repeats`` times; ``cache`` itself is left untouched."""
    branch = copy.copy(cache)
    branch.layers = [copy.copy(layer) for layer in cache.layers]
    branch.batch_repeat_interleave(repeats)  # repeat_interleave builds new tensors, so the original is safe
    return branch


def _step(model, tok: torch.Tensor, cache, mask: torch.Tensor, pos: torch.Tensor):
    """One cached forward of one token per row; returns (fp32 log-probs, mask after the token)."""
    mask = torch.cat([mask, mask.new_ones((len(tok), 1))], dim=1)
    out = model(input_ids=tok.unsqueeze(1), attention_mask=mask, position_ids=pos.unsqueeze(1),
                past_key_values=cache, use_cache=True)
    return torch.log_softmax(out.logits[:, -1, :].float(), dim=-1), mask


@torch.inference_mode()
def candidate_future(model, cache, mask: torch.Tensor, next_pos: torch.Tensor, log_p: torch.Tensor,
                     cal: FutureCalibration, rngs: Sequence[np.random.Generator] | None = None,
                     eos_token_ids: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """(top-k candidate ids, their F) for every row, both (B, k); ``log_p`` is p^ at the current step.
    Kinds lookahead and rollout only (a head gives every token's F: `future_values`)."""
    if cal.kind not in ("lookahead", "rollout"):
        raise ValueError(f"candidate_future: kind {cal.kind!r} has no top-k candidates; use future_values")
    B, k = log_p.shape[0], min(cal.top_k, log_p.shape[1])
    cand = torch.topk(log_p, k, dim=-1).indices  # ties broken by torch.topk, deterministically on one build
    if cal.kind == "lookahead":
        lp, _ = _step(model, cand.reshape(-1), branch_cache(cache, k), mask.repeat_interleave(k, 0),
                      next_pos.repeat_interleave(k, 0))
        return cand, entropy(lp).view(B, k)
    if rngs is None or len(rngs) != B:
        raise ValueError(f"rollout needs one random generator per row ({B}), got {None if rngs is None else len(rngs)}")
    m = cal.n_rollouts
    tok = cand.reshape(-1).repeat_interleave(m)
    cache_r = branch_cache(cache, k * m)
    mask_r, pos_r = mask.repeat_interleave(k * m, 0), next_pos.repeat_interleave(k * m, 0)
    eos = torch.as_tensor(sorted({int(e) for e in eos_token_ids}), dtype=torch.long)
    alive = ~torch.isin(tok, eos)
    total = torch.zeros(B * k * m, dtype=torch.float64)
    for j in range(cal.horizon):
        lp, mask_r = _step(model, tok, cache_r, mask_r, pos_r)
        total += entropy(lp).double() * alive
        if j == cal.horizon - 1:
            break
        u = torch.tensor(np.concatenate([g.random(k * m) for g in rngs]), dtype=torch.float64)
        cdf = torch.cumsum(lp.double().exp(), dim=-1)
        tok = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1).clamp_(max=lp.shape[1] - 1)
        alive &= ~torch.isin(tok, eos)
        pos_r = pos_r + 1
    return cand, total.view(B, k, m).mean(-1).float()


def fill_future(log_p: torch.Tensor, cand: torch.Tensor, f_cand: torch.Tensor) -> torch.Tensor:
    """F over the whole vocabulary: the candidates' own values, and their p^-weighted mean everywhere else."""
    w = log_p.gather(1, cand).exp()
    fill = (w * f_cand).sum(1, keepdim=True) / w.sum(1, keepdim=True)
    return fill.expand_as(log_p).clone().scatter_(1, cand, f_cand)


def future_values(model, cache, mask: torch.Tensor, next_pos: torch.Tensor, log_p: torch.Tensor,
                  cal: FutureCalibration, rngs: Sequence[np.random.Generator] | None = None,
                  eos_token_ids: Sequence[int] = (), hidden: torch.Tensor | None = None) -> torch.Tensor:
    """F over the whole vocabulary (B, V): the head's output at ``hidden`` (the final hidden state of this step,
    from `hidden_tap`), or the top-k estimate with its fill-in for lookahead / rollout."""
    if cal.kind == "head":
        if hidden is None or hidden.shape[0] != log_p.shape[0]:
            raise ValueError(f"kind head needs this step's final hidden state for all {log_p.shape[0]} rows, got "
                             f"{None if hidden is None else tuple(hidden.shape)}")
        F = cal.head.to(hidden.device)(hidden)  # a no-op once the head sits on the model's device
        if F.shape != log_p.shape:
            raise ValueError(f"future head outputs {tuple(F.shape)} but the model's log-probs are {tuple(log_p.shape)}")
        return F
    cand, f_cand = candidate_future(model, cache, mask, next_pos, log_p, cal, rngs, eos_token_ids)
    return fill_future(log_p, cand, f_cand)


def adjust_log_probs(log_p: torch.Tensor, F: torch.Tensor, a: float) -> torch.Tensor:
    """log p~ = (1+a) log p^ - a F - log Z over the last axis; tokens with p^ = 0 stay impossible."""
    if a == 0.0:
        return log_p
    z = torch.where(torch.isfinite(log_p), (1.0 + a) * log_p - a * F, log_p)
    return torch.log_softmax(z, dim=-1)


@torch.inference_mode()
def teacher_forced_steps(model, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], *,
                         decode=None, pad_token_id: int = 0, tap: HiddenTap | None = None):
    """Walk the responses token by token with the KV cache, as the sampler does. Yields, per step j,
    (j, log p^ (B, V), cache, mask, next_pos, y_j (B,), live (B,) bool, final hidden state (B, D) or None);
    the hidden state is read from ``tap`` right after the walk's own forward (before any estimator runs)."""
    from transformers import DynamicCache

    from lmcal.lm.decode import DecodeConfig
    from lmcal.lm.padding import left_pad

    if len(prompts) != len(responses) or not prompts:
        raise ValueError(f"need one response per prompt, got {len(prompts)} prompts, {len(responses)} responses")
    decode = decode or DecodeConfig()
    lens = torch.tensor([len(r) for r in responses])
    n_steps = int(lens.max())
    y_all = torch.full((len(responses), n_steps), int(pad_token_id), dtype=torch.long)
    for i, r in enumerate(responses):
        y_all[i, :len(r)] = torch.as_tensor(list(r), dtype=torch.long)
    ids, mask, pos = left_pad(prompts, pad_token_id)
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
    next_pos = pos[:, -1] + 1
    for j in range(n_steps):
        hidden = None if tap is None else tap.last
        yield j, decode.apply(out.logits[:, -1, :]), cache, mask, next_pos, y_all[:, j], j < lens, hidden
        if j == n_steps - 1:
            break
        mask = torch.cat([mask, mask.new_ones((len(lens), 1))], dim=1)
        out = model(input_ids=y_all[:, j].unsqueeze(1), attention_mask=mask, position_ids=next_pos.unsqueeze(1),
                    past_key_values=cache, use_cache=True)
        next_pos = next_pos + 1


@torch.inference_mode()
def calibrated_nll_grid(model, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                        cal: FutureCalibration, a_grid: Sequence[float], *, decode=None, pad_token_id: int = 0,
                        eos_token_ids: Sequence[int] = (), rngs: Sequence[np.random.Generator] | None = None
                        ) -> tuple[np.ndarray, int]:
    """Teacher-forced log loss of p~ on human responses for every a in ``a_grid``: (summed nats (G,), tokens).

    It walks the responses token by token with the KV cache (`teacher_forced_steps`), exactly like the sampler,
    so the F of a human prefix comes from the same `future_values` the sampler uses (``cal.a`` itself is
    ignored: the grid is). Summing on a grid keeps the fit exact at every grid point without storing
    full-vocabulary log-probs.
    """
    grid = [float(a) for a in a_grid]
    nll = np.zeros(len(grid))
    with hidden_tap(model, enabled=cal.kind == "head") as tap:
        for _, lp, cache, mask, next_pos, y, live, hidden in teacher_forced_steps(
                model, prompts, responses, decode=decode, pad_token_id=pad_token_id, tap=tap):
            F = future_values(model, cache, mask, next_pos, lp, cal, rngs, eos_token_ids, hidden)
            for g, a in enumerate(grid):
                tok_lp = adjust_log_probs(lp, F, a).gather(1, y.unsqueeze(1)).squeeze(1).double()
                nll[g] -= float(tok_lp[live].sum())
    return nll, int(sum(len(r) for r in responses))


def fit_a(a_grid: Sequence[float], nll: Sequence[float]) -> float:
    """The grid point of least held-out log loss; the grid must contain 0, so a never does worse than 0."""
    grid, nll = np.asarray(a_grid, dtype=float), np.asarray(nll, dtype=float)
    if grid.shape != nll.shape or not (grid == 0).any():
        raise ValueError(f"a_grid must contain 0 and match nll in length, got {grid.tolist()} / {nll.shape}")
    best = int(np.argmin(nll))
    return 0.0 if nll[best] >= nll[grid == 0].min() else float(grid[best])
