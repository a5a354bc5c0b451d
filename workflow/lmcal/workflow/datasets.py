"""Parse-time look-ups of the data rules: what each dataset's and the ladder tokenizer's jobs receive."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def dataset_spec(config: dict, name: str) -> dict:
    """``datasets.<name>`` as the job sees it; the fact corpus (source ``facts``) carries the ``facts:`` settings.

    Only the fact corpus gets them, so editing ``facts:`` does not re-run the natural corpora's jobs.
    """
    if name not in config.get("datasets", {}):
        raise ValueError(f"datasets: unknown dataset {name!r}")
    spec = dict(config["datasets"][name])
    if spec.get("source") == "facts":
        spec["settings"] = dict(config.get("facts") or {})
    return spec


def dataset_lookup(config: dict) -> Callable[[Any], dict]:
    """Snakemake params function: wildcards (dataset) → ``dataset_spec``."""
    return lambda wildcards: dataset_spec(config, wildcards.dataset)


def ladder_train_only(config: dict) -> list[bool]:
    """One flag per ``ladder.datasets`` entry: True for corpora that go to the train stream only."""
    ladder = config["ladder"]
    train_only = list(ladder.get("train_only") or [])
    unknown = [d for d in train_only if d not in ladder["datasets"]]
    if unknown:
        raise ValueError(f"ladder.train_only: {unknown[0]!r} is not in ladder.datasets {ladder['datasets']}")
    if set(train_only) >= set(ladder["datasets"]):
        raise ValueError("ladder.train_only: at least one corpus must feed the held-out stream")
    return [d in train_only for d in ladder["datasets"]]


def evalset_spec(config: dict, name: str) -> dict:
    """``calibration.evalsets.<name>`` as its jobs see it; a ``facts`` set carries the ``facts:`` settings."""
    evalsets = config.get("calibration", {}).get("evalsets", {})
    if name not in evalsets:
        raise ValueError(f"calibration.evalsets: unknown evaluation set {name!r}")
    spec = dict(evalsets[name])
    if spec.get("kind") == "facts":
        spec["settings"] = dict(config.get("facts") or {})
    return spec


def evalset_lookup(config: dict) -> Callable[[Any], dict]:
    """Snakemake params function: wildcards (evalset) → ``evalset_spec``."""
    return lambda wildcards: evalset_spec(config, wildcards.evalset)


def fact_evalsets(config: dict) -> list[str]:
    """Names of the ``calibration.evalsets`` of kind ``facts`` (the ones with frequency buckets)."""
    return [n for n, s in config.get("calibration", {}).get("evalsets", {}).items() if s.get("kind") == "facts"]


def fact_base_pairs(config: dict) -> list[tuple[str, str]]:
    """(model, evalset) of every ``calibration.models`` model on every ``facts`` set: base rows of the bucket table."""
    return [(m, e) for m in config.get("calibration", {}).get("models", []) for e in fact_evalsets(config)]


def fact_base_items(config: dict) -> list[str]:
    """The scored-items files of ``fact_base_pairs`` (same order)."""
    return [f"results/calibration/model~{m}/eval~{e}/items.parquet" for m, e in fact_base_pairs(config)]
