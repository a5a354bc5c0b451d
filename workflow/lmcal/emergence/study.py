"""The emergence study's stages as plain functions (the rule scripts are thin adapters around these).

task data → train rung (``ladder.train_rung``) → ``evaluate_rung`` (stored outputs per snapshot) → ``rescore``
(metrics only, from the stored outputs) → ``lmcal.emergence.report`` (fits, backtests, figures, summary).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lmcal.emergence import tasks
from lmcal.emergence.metrics import aggregate_scores, pass_until_summary, score_outputs

MODEL_KEYS = ["family", "size", "seed", "step", "final", "n_params", "heldout_ce"]
ITEM_KEYS = ["component", "task", "op", "n_digits", "format"]


def build_task_data(spec: tasks.TaskSpec, seed: int, n_train_docs: int, n_heldout_docs: int) -> dict:
    """Evaluation items, training and held-out LM documents, and a manifest with the disjointness check.

    Raises RuntimeError if any training problem is also an evaluation problem (cannot happen by construction;
    the check guards the construction).
    """
    items = tasks.make_eval_items(spec, seed)
    train = tasks.make_training_documents(spec, n_train_docs, seed)
    heldout = tasks.make_training_documents(spec, n_heldout_docs, seed, held_out=True)
    train_keys = [k for ks in train["keys"] for k in ks]
    leaked = tasks.check_disjoint(train_keys, items["key"])
    if leaked:
        raise RuntimeError(
            f"training data contain {len(leaked)} evaluation problems, e.g. {sorted(leaked)[:3]}"
        )
    manifest = dict(
        spec=spec.as_dict(),
        seed=seed,
        n_items=len(items),
        n_train_docs=len(train),
        n_train_chars=int(train["text"].str.len().sum()),
        n_heldout_docs=len(heldout),
        n_train_problems=len(train_keys),
        n_eval_problems=int(items["key"].nunique()),
        leaked_keys=0,
        components=sorted(items["component"].unique()),
    )
    return dict(items=items, train=train, heldout=heldout, manifest=manifest)


def evaluate_rung(
    model_dir: str | Path,
    items: pd.DataFrame,
    *,
    size: str,
    seed: int,
    batch_size: int = 128,
    pass_until: dict | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stored outputs of every snapshot of one rung, plus PassUntil samples of its final model.

    ``pass_until``: {components: [...], items: per component, budget, chunk, min_hits} (None: no sampling).
    """
    from transformers.utils import logging as hf_logging

    from lmcal.emergence.ladder import heldout_ce, list_snapshots
    from lmcal.emergence.outputs import item_outputs, sample_until
    from lmcal.models.store import load_model, load_model_info

    hf_logging.disable_progress_bar()  # one "Loading weights" bar per snapshot would swamp the log

    ce = heldout_ce(model_dir)
    snaps = list_snapshots(model_dir)
    frames, samples = [], pd.DataFrame()
    for step, path in tqdm(snaps, desc=f"evaluate {size}/{seed}"):
        model, tok = load_model(path)
        info = load_model_info(path)
        out = item_outputs(model, tok, items, batch_size=batch_size)
        keys = dict(
            family="ladder",
            size=size,
            seed=int(seed),
            step=int(step),
            final=step == snaps[-1][0],
            n_params=int(info.n_params_non_embedding),
            heldout_ce=float(ce.get(step, np.nan)),
        )
        frames.append(out.assign(**keys))
        if pass_until and step == snaps[-1][0]:
            sub = select_items(items, list(pass_until["components"]), int(pass_until["items"]))
            samples = (
                sample_until(
                    model,
                    tok,
                    sub,
                    budget=int(pass_until["budget"]),
                    chunk=int(pass_until["chunk"]),
                    min_hits=int(pass_until["min_hits"]),
                    seed=int(seed),
                )
                .merge(sub[["item_id", *ITEM_KEYS]], on="item_id")
                .assign(**keys)
            )
    return pd.concat(frames, ignore_index=True), samples


def evaluate_reference_model(
    model_dir: str | Path, items: pd.DataFrame, *, name: str, batch_size: int = 16
) -> pd.DataFrame:
    """Stored outputs of a pretrained model (e.g. SmolLM2, few-shot) on ``items``: one extra, real point."""
    from lmcal.emergence.outputs import item_outputs
    from lmcal.models.store import load_model, load_model_info

    model, tok = load_model(model_dir)
    info = load_model_info(model_dir)
    out = item_outputs(model, tok, items, batch_size=batch_size, progress=True)
    return out.assign(
        family=name,
        size=name,
        seed=0,
        step=0,
        final=True,
        n_params=int(info.n_params_non_embedding),
        heldout_ce=np.nan,
    )


def rescore(
    outputs: list[pd.DataFrame], samples: list[pd.DataFrame], ci: float = 0.95
) -> dict[str, pd.DataFrame]:
    """Per-item scores, per (model, step, component) curves and PassUntil summaries from stored outputs."""
    scores = score_outputs(pd.concat(outputs, ignore_index=True))
    curves = aggregate_scores(scores, by=MODEL_KEYS + ITEM_KEYS, ci=ci)
    samples = [s for s in samples if len(s)]
    pu = (
        pass_until_summary(pd.concat(samples, ignore_index=True), by=MODEL_KEYS + ITEM_KEYS, ci=ci)
        if samples
        else pd.DataFrame(columns=MODEL_KEYS + ITEM_KEYS)
    )
    return dict(scores=scores, curves=curves, pass_until=pu)


def select_items(items: pd.DataFrame, components: list[str], n_items: int) -> pd.DataFrame:
    """The first ``n_items`` items of each of ``components`` (ValueError naming unknown components)."""
    unknown = sorted(set(components) - set(items["component"]))
    if unknown:
        raise ValueError(
            f"components: {unknown} not among the evaluation items {sorted(items['component'].unique())}"
        )
    sub = items[items["component"].isin(components)]
    return sub.groupby("component", group_keys=False, sort=False).head(int(n_items)).reset_index(drop=True)
