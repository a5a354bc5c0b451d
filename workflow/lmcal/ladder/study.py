"""The model ladder: small Llama-style models trained from scratch on CPU, and its summary table and fit.

The ladder is the size axis of every study when no GPU and no hub are available, so its held-out loss must
fall with size. Building and training live in `lmcal.models.llama` (shared with the emergence task ladder and
the V/D study); the BPE tokenizer and token streams in `lmcal.models.tokenizers`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lmcal.models.checkpoint import tokenizer_digest
from lmcal.models.llama import build_llama, train_lm

if TYPE_CHECKING:
    import pandas as pd


def train_ladder_model(tokenizer, streams: dict[str, np.ndarray], arch: dict, *, name: str, steps: int,
                       batch_size: int, seq_len: int, lr: float, warmup_steps: int, eval_tokens: int, seed: int,
                       checkpoint_dir: str | Path | None = None, fingerprint_inputs: dict | None = None):
    """Build and train one ladder model; returns (model, history, held-out loss in nats/token).

    A checkpoint in ``checkpoint_dir`` is resumed only under the same settings, token streams, tokenizer
    (its digest) and ``fingerprint_inputs`` (e.g. the digest of the tokenizer file the adapter loaded)."""
    model = build_llama(arch, vocab_size=len(tokenizer), max_position=max(2048, seq_len), seed=seed,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    inputs = {"tokenizer": tokenizer_digest(tokenizer), **(fingerprint_inputs or {})}
    history = train_lm(model, streams["train"], steps=steps, batch_size=batch_size, seq_len=seq_len,
                       lr=arch.get("lr") or lr, warmup_steps=warmup_steps, schedule="cosine", seed=seed,
                       eval_ids=streams["eval"], eval_every=max(1, steps // 5), eval_tokens=eval_tokens,
                       checkpoint_dir=checkpoint_dir, checkpoint_every=max(1, steps // 5),
                       fingerprint_inputs=inputs)
    return model, history, history["eval_loss"][-1]


def ladder_table(infos: list[dict], final_losses: list[float]) -> "pd.DataFrame":
    """One row per ladder model, sorted by non-embedding parameters, with a monotonicity check column."""
    import pandas as pd

    df = pd.DataFrame(infos)[["name", "n_params", "n_params_non_embedding", "hidden_size", "n_layers", "vocab_size"]]
    df["heldout_loss"] = final_losses
    df = df.sort_values("n_params_non_embedding").reset_index(drop=True)
    df["loss_decreases"] = df["heldout_loss"].diff().fillna(-1.0) < 0
    return df


def ladder_summary(table, n_boot: int = 200, seed: int = 0) -> tuple[dict, object | None]:
    """Headline numbers of the ladder (size span, losses, monotonicity) and, with at least 3 sizes, the fit
    L = E + A·N^(−α) of held-out loss on non-embedding parameters (summed log-space Huber, bootstrap CIs).
    Returns (summary, fit or None)."""
    from lmcal.scaling import FitSettings, fit_power_law

    n = table["n_params_non_embedding"].to_numpy(float)
    summary = {
        "n_models": int(len(table)),
        "non_embedding_span": float(n.max() / n.min()),
        "heldout_loss_monotone": bool(table["loss_decreases"].all()),
        "heldout_loss_smallest": float(table["heldout_loss"].iloc[0]),
        "heldout_loss_largest": float(table["heldout_loss"].iloc[-1]),
        "models": table.to_dict(orient="records"),
    }
    fit = None
    if len(table) >= 3:
        fit = fit_power_law(n, table["heldout_loss"].to_numpy(float), FitSettings(n_boot=n_boot, seed=seed),
                            progress=False)
        summary["loss_fit"] = fit.as_dict()
    summary["claims"] = ladder_claims(table, fit)
    return summary, fit


def ladder_claims(table, fit) -> list[dict]:
    """Claim records of the ladder (lmcal.core.claims): loss per size, that it falls at every size, the exponent."""
    from lmcal.core.claims import claim

    single = "one seed per size: no interval"
    out = [claim(f"ladder.heldout_loss.{r['name']}",
                 f"held-out loss of {r['name']} ({int(r['n_params_non_embedding'])} non-embedding parameters), nats/token",
                 r["heldout_loss"], rule=f"reported as measured ({single})") for r in table.to_dict(orient="records")]
    out.append(claim("ladder.loss_falls", "held-out loss falls at every larger size (value: largest minus smallest)",
                     float(table["heldout_loss"].iloc[-1] - table["heldout_loss"].iloc[0]),
                     rule=f"holds if every size has a lower held-out loss than the next smaller one ({single})",
                     verdict=bool(table["loss_decreases"].all())))
    if fit is not None and "alpha" in fit.params:
        lo_hi = fit.ci.get("alpha")
        out.append(claim("ladder.alpha", "exponent alpha of the fit L = E + A * N^-alpha over the sizes",
                         fit.params["alpha"], ci=lo_hi, interval=f"{fit.settings.ci:.0%} percentile bootstrap over sizes"
                         if lo_hi else None, rule="holds if the interval's lower bound is above 0",
                         verdict=None if lo_hi is None else bool(lo_hi[0] > 0)))
    return out
