"""The learned future-entropy head (kind ``head`` of `lmcal.lm.future`; spec entropy-calibration §6).

The paper's black box made practical: one linear layer on the model's final hidden state h(c) (the input of
lm_head, after the final norm) gives F^(c, v) = W_v . h(c) + b_v for every token v at once, one extra (D x V)
matmul per step. It is fitted by least squares (MSE, Adam, full batch) on rollout labels F(c, v) of the
top-k candidates v of p^ at contexts c (`collect_pairs`); the loss counts labelled (c, v) entries only.

Initialisation W = 0, b = mean training label: a token that never appears as a labelled candidate gets no
gradient (Adam's moments stay 0), so its F stays the mean label, the same "no information" value for every
context. Inside the labelled set each token learns its own context-dependent F. Full-batch training from a fixed
initialisation uses no random numbers, so it is deterministic; the labels' rollouts draw from seeded streams.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lmcal.core import io
from lmcal.lm.future import FutureCalibration, candidate_future, hidden_tap, teacher_forced_steps


class FutureHead(torch.nn.Module):
    """F^(c, .) = h @ W.T + b over the whole vocabulary; ``h`` is (B, D), the output (B, V) fp32."""

    def __init__(self, hidden_size: int, vocab_size: int) -> None:
        super().__init__()
        if hidden_size < 1 or vocab_size < 1:
            raise ValueError(f"FutureHead needs hidden_size, vocab_size >= 1, got {hidden_size}, {vocab_size}")
        self.proj = torch.nn.Linear(int(hidden_size), int(vocab_size))

    @classmethod
    def like(cls, model) -> FutureHead:
        """A head with the shape of ``model``'s lm_head (D -> V), zero-initialised."""
        out = model.get_output_embeddings()
        head = cls(out.in_features, out.out_features)
        torch.nn.init.zeros_(head.proj.weight)
        torch.nn.init.zeros_(head.proj.bias)
        return head

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(h.float())

    def describe(self) -> dict[str, Any]:
        """Shape and a digest of the weights: what a sample fingerprint needs to tell two heads apart."""
        digest = hashlib.sha256()
        for t in (self.proj.weight, self.proj.bias):
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        return {"hidden_size": self.proj.in_features, "vocab_size": self.proj.out_features,
                "sha256": digest.hexdigest()[:16]}


def save_head(head: FutureHead, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
    """safetensors {weight (V, D), bias (V,)}, written atomically; ``metadata`` is stored as JSON text."""
    from safetensors.torch import save_file

    tensors = {"weight": head.proj.weight.detach().contiguous(), "bias": head.proj.bias.detach().contiguous()}
    with io.atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"lmcal": json.dumps(io.jsonable(metadata or {}))})


def load_head(path: str | os.PathLike) -> FutureHead:
    """A `FutureHead` from `save_head`'s file, in eval mode."""
    from safetensors.torch import load_file

    t = load_file(str(path))
    if set(t) != {"weight", "bias"} or t["weight"].ndim != 2 or t["bias"].shape != t["weight"].shape[:1]:
        raise ValueError(f"{path}: not a future head (want weight (V, D) and bias (V,), got "
                         f"{ {k: tuple(v.shape) for k, v in t.items()} })")
    head = FutureHead(t["weight"].shape[1], t["weight"].shape[0])
    head.load_state_dict({"proj.weight": t["weight"].float(), "proj.bias": t["bias"].float()})
    return head.eval()


@torch.inference_mode()
def collect_pairs(model, prompts: Sequence[Sequence[int]], sequences: Sequence[Sequence[int]],
                  rngs: Sequence[np.random.Generator], *, top_k: int, n_rollouts: int, horizon: int,
                  pad_token_id: int = 0, eos_token_ids: Sequence[int] = ()) -> dict[str, np.ndarray]:
    """Labelled (c, v) pairs along teacher-forced ``sequences`` (human continuations or model samples), one
    context per position: ``row`` (which sequence), ``hidden`` (N, D), ``cand`` (N, k), ``rollout`` (N, k) =
    the rollout F (h-step, m rollouts, from ``rngs``, one stream per sequence), ``lookahead`` (N, k) = the
    exact next-step entropy of the same candidates (for comparison)."""
    roll = FutureCalibration(a=1.0, kind="rollout", top_k=top_k, n_rollouts=n_rollouts, horizon=horizon)
    look = FutureCalibration(a=1.0, kind="lookahead", top_k=top_k)
    out: dict[str, list] = {"row": [], "hidden": [], "cand": [], "rollout": [], "lookahead": []}
    with hidden_tap(model) as tap:
        for _, lp, cache, mask, next_pos, _, live, hidden in teacher_forced_steps(
                model, prompts, sequences, pad_token_id=pad_token_id, tap=tap):
            hidden = hidden.clone()  # the estimators' own forwards overwrite the tap
            cand, f_roll = candidate_future(model, cache, mask, next_pos, lp, roll, rngs, eos_token_ids)
            cand_l, f_look = candidate_future(model, cache, mask, next_pos, lp, look)
            if not torch.equal(cand, cand_l):
                raise RuntimeError("rollout and lookahead disagree on the top-k candidates")
            keep = live.nonzero().squeeze(1)
            for name, value in (("row", keep), ("hidden", hidden), ("cand", cand), ("rollout", f_roll),
                                ("lookahead", f_look)):
                out[name].append((value if name == "row" else value[keep]).cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def _at(head: FutureHead, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The head's F at candidates ``c`` (N, k) only: W[c] . h + b[c], without the full (N, V) product."""
    return torch.einsum("nkd,nd->nk", head.proj.weight[c], h) + head.proj.bias[c]


def head_values(head: FutureHead, hidden: np.ndarray, cand: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """The head's F at the labelled candidates: (N, k), computed ``chunk`` contexts at a time."""
    h, c = torch.as_tensor(hidden, dtype=torch.float32), torch.as_tensor(cand, dtype=torch.long)
    with torch.no_grad():
        return torch.cat([_at(head, h[s:s + chunk], c[s:s + chunk]) for s in range(0, len(h), chunk)]).numpy()


def fit_head(head: FutureHead, hidden: np.ndarray, cand: np.ndarray, labels: np.ndarray, *, epochs: int,
             lr: float, l2: float = 0.0, val: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
             chunk: int = 4096) -> dict[str, Any]:
    """Fit ``head`` in place on labelled entries (hidden (N, D), cand (N, k), labels (N, k)): MSE + l2 |W|^2,
    full-batch Adam for ``epochs`` steps from W = 0, b = mean label. Returns the loss history (train, and val
    MSE on ``val`` = (hidden, cand, labels) when given)."""
    if hidden.ndim != 2 or cand.shape != labels.shape or cand.shape[0] != hidden.shape[0] or not len(hidden):
        raise ValueError(f"fit_head: want hidden (N, D), cand and labels (N, k), N > 0; got {hidden.shape}, "
                         f"{cand.shape}, {labels.shape}")
    if epochs < 1 or not lr > 0 or l2 < 0:
        raise ValueError(f"fit_head: need epochs >= 1, lr > 0, l2 >= 0; got {epochs}, {lr}, {l2}")
    h = torch.as_tensor(hidden, dtype=torch.float32)
    c = torch.as_tensor(cand, dtype=torch.long)
    y = torch.as_tensor(labels, dtype=torch.float32)
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.bias.fill_(float(y.mean()))
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    train, valid = [], []
    for _ in range(epochs):  # full batch, accumulated over fixed chunks (memory: chunk x k x D), no randomness
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for s in range(0, len(h), chunk):
            sse = ((_at(head, h[s:s + chunk], c[s:s + chunk]) - y[s:s + chunk]) ** 2).sum() / y.numel()
            sse.backward()
            total += float(sse.detach())
        (l2 * (head.proj.weight ** 2).sum()).backward()
        opt.step()
        train.append(total)
        if val is not None:
            valid.append(float(np.mean((head_values(head, val[0], val[1], chunk) - val[2]) ** 2)))
    final = float(np.mean((head_values(head, hidden, cand, chunk) - labels) ** 2))
    return {"train_mse": final, "train_mse_history": train, "val_mse_history": valid or None,
            "val_mse": valid[-1] if valid else None}
