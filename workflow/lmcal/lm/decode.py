"""Decoding transforms: the exact next-token distribution a sampler draws from.

One definition serves both sampling (`lmcal.lm.sampling`) and teacher-forced scoring (`lmcal.lm.scoring`), so the
entropy of a generated step and the log loss of a human token are measured under the same distribution.

Order of operations (spec entropy-calibration §2, reference `HFModel.compute_logprobs`):

1. fp32 logits -> ``log_softmax`` -> divide by the temperature tau -> ``log_softmax``. Mathematically this is
   ``log_softmax(logits / tau)``; the two-step form is kept so numbers match the reference bit for bit in spirit.
2. Truncations, each applied to the renormalised output of the previous one, in this fixed order (the order of
   Hugging Face's default logits warpers): ``top_k`` -> ``top_p`` -> ``min_p`` -> ``epsilon``. Tokens outside
   the kept set get log-probability ``-inf``; the kept set is renormalised after every truncation.

Definitions (p = the distribution entering that truncation):

* ``top_k = k``: keep every token whose log-prob is >= the k-th largest (ties at the boundary are all kept).
* ``top_p = q``: sort descending; keep a token iff the mass of the tokens strictly before it is < q (the smallest
  prefix with mass >= q; identical to HF's ``TopPLogitsWarper``). Ties in the sort are broken by token id.
* ``min_p = m``: keep tokens with p >= m * max(p).
* ``epsilon = e``: keep tokens with p >= e; the most likely token is always kept.

All entropies are in nats.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch


@dataclass(frozen=True)
class DecodeConfig:
    """A decoding rule: temperature plus optional truncations (None = off)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    epsilon: float | None = None

    def __post_init__(self) -> None:
        t = self.temperature
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t <= 0:
            raise ValueError(f"temperature must be a finite number > 0, got {t!r} (greedy decoding has no entropy)")
        if self.top_k is not None and (isinstance(self.top_k, bool) or int(self.top_k) != self.top_k
                                       or self.top_k < 1):
            raise ValueError(f"top_k must be an integer >= 1 or None, got {self.top_k!r}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] or None, got {self.top_p!r}")
        if self.min_p is not None and not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1] or None, got {self.min_p!r}")
        if self.epsilon is not None and not 0.0 <= self.epsilon < 1.0:
            raise ValueError(f"epsilon must be in [0, 1) or None, got {self.epsilon!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> DecodeConfig:
        """Build from a config mapping such as ``{temperature: 0.9, top_p: 0.95}``; unknown keys are an error."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"decode: unknown key(s) {unknown} (known: {sorted(known)})")
        return cls(**{k: v for k, v in d.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def is_truncating(self) -> bool:
        """True if some token can get probability exactly zero (so human log loss can be infinite)."""
        return (
            (self.top_k is not None)
            or (self.top_p is not None and self.top_p < 1.0)
            or bool(self.min_p)
            or bool(self.epsilon)
        )

    def tempered(self, logits: torch.Tensor) -> torch.Tensor:
        """Step 1 only: fp32 ``log_softmax(log_softmax(logits) / tau)`` over the last dimension."""
        lp = torch.log_softmax(logits.float(), dim=-1)
        if self.temperature != 1.0:
            lp = torch.log_softmax(lp / self.temperature, dim=-1)
        return lp

    def truncate(self, log_probs: torch.Tensor) -> torch.Tensor:
        """Step 2 only: apply the truncations to normalised log-probs (last dimension = vocabulary)."""
        lp = log_probs
        if self.top_k is not None and self.top_k < lp.shape[-1]:
            kth = torch.topk(lp, int(self.top_k), dim=-1).values[..., -1:]
            lp = _renormalise(lp.masked_fill(lp < kth, -math.inf))
        if self.top_p is not None and self.top_p < 1.0:
            lp = _renormalise(lp.masked_fill(~_top_p_keep(lp, self.top_p), -math.inf))
        if self.min_p:
            thresh = lp.max(dim=-1, keepdim=True).values + math.log(self.min_p)
            lp = _renormalise(lp.masked_fill(lp < thresh, -math.inf))
        if self.epsilon:
            drop = lp < math.log(self.epsilon)
            drop.scatter_(-1, lp.argmax(dim=-1, keepdim=True), False)  # never drop the mode
            lp = _renormalise(lp.masked_fill(drop, -math.inf))
        return lp

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Normalised fp32 log-distribution actually sampled from (``-inf`` outside the kept set)."""
        lp = self.tempered(logits)
        return self.truncate(lp) if self.is_truncating else lp


def _renormalise(lp: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(lp, dim=-1)


def _top_p_keep(lp: torch.Tensor, top_p: float) -> torch.Tensor:
    """Boolean mask of the nucleus: tokens whose preceding (descending-order) mass is < top_p."""
    sorted_lp, order = torch.sort(lp, dim=-1, descending=True, stable=True)
    probs = sorted_lp.double().exp()  # fp64 cumsum so the boundary does not drift over 150k-token vocabularies
    mass_before = torch.cumsum(probs, dim=-1) - probs
    keep_sorted = mass_before < top_p
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """Exact entropy -sum p log p (nats) over the last dimension; ``-inf`` entries contribute 0."""
    p = log_probs.exp()
    terms = torch.where(torch.isfinite(log_probs), p * log_probs, torch.zeros_like(log_probs))
    return -terms.sum(dim=-1)


def mixture_logloss(log_probs_token: torch.Tensor, base_log_probs_token: torch.Tensor, eps: float) -> torch.Tensor:
    """Finite log loss (nats) of a token under ``(1 - eps) * p_decode + eps * p_tempered``.

    ``p_decode`` is the truncated distribution actually sampled from and ``p_tempered`` the same temperature
    without truncation, so a human token outside the kept set costs about ``-log(eps * p_tempered)`` instead of
    infinity. With no truncation the two distributions coincide and this equals the plain log loss.
    """
    if not 0.0 < eps < 1.0:
        raise ValueError(f"mixture eps must be in (0, 1), got {eps!r}")
    a = log_probs_token.double() + math.log1p(-eps)
    b = base_log_probs_token.double() + math.log(eps)
    return -torch.logaddexp(a, b)
