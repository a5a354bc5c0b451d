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
    return _with_facts(config, config["datasets"][name], config["datasets"][name].get("source") == "facts")


def dataset_lookup(config: dict) -> Callable[[Any], dict]:
    """Snakemake params function: wildcards (dataset) → ``dataset_spec``."""
    return lambda wildcards: dataset_spec(config, wildcards.dataset)


def train_only_flags(datasets: list[str], names: list[str], where: str, *, listed_in: str | None = None
                     ) -> list[bool]:
    """One flag per entry of ``datasets``: True for the corpora ``names`` sends to the train stream only.

    ``where`` names the config key in messages; ``listed_in`` (the key holding ``datasets``) also requires every
    name to be one of them. At least one corpus must feed the held-out stream.
    """
    if listed_in is not None:
        unknown = [d for d in names if d not in datasets]
        if unknown:
            raise ValueError(f"{where}: {unknown[0]!r} is not in {listed_in} {datasets}")
    flags = [d in names for d in datasets]
    if flags and all(flags):
        raise ValueError(f"{where}: every corpus of {datasets} is train-only; at least one must feed the held-out "
                         "stream")
    return flags


def ladder_train_only(config: dict) -> list[bool]:
    """One flag per ``ladder.datasets`` entry: True for corpora that go to the train stream only."""
    ladder = config["ladder"]
    return train_only_flags(list(ladder["datasets"]), list(ladder.get("train_only") or []), "ladder.train_only",
                            listed_in="ladder.datasets")


def evalset_spec(config: dict, name: str) -> dict:
    """``calibration.evalsets.<name>`` as its jobs see it; a ``facts`` set carries the ``facts:`` settings."""
    evalsets = config.get("calibration", {}).get("evalsets", {})
    if name not in evalsets:
        raise ValueError(f"calibration.evalsets: unknown evaluation set {name!r}")
    return _with_facts(config, evalsets[name], evalsets[name].get("kind") == "facts")


def _with_facts(config: dict, spec: dict, is_facts: bool) -> dict:
    """A copy of ``spec``; a knowledge-world spec also carries the one ``facts:`` block as ``settings``."""
    spec = dict(spec)
    if is_facts:
        spec["settings"] = dict(config.get("facts") or {})
    return spec


def evalset_lookup(config: dict) -> Callable[[Any], dict]:
    """Snakemake params function: wildcards (evalset) → ``evalset_spec``."""
    return lambda wildcards: evalset_spec(config, wildcards.evalset)


def eval_settings(config: dict, evalset: str) -> dict:
    """The calibration study's scoring protocol for ``evalset`` (the evaluation set's own
    ``method``/``template`` over the study-wide ones)."""
    calib = config["calibration"]
    spec = calib["evalsets"][evalset]
    return {"method": spec.get("method") or calib["method"], "normalization": calib["normalization"],
            "template": spec.get("template") or calib["template"], "chat_template": calib["chat_template"],
            "n_bins": calib["n_bins"], "binning": calib["binning"], "batch_size": calib["batch_size"]}


def evalset_settings(config: dict) -> dict[str, dict]:
    """``eval_settings`` of every ``calibration.evalsets`` set, by name: what one ``evaluate_calibration`` job uses."""
    return {name: eval_settings(config, name) for name in config["calibration"]["evalsets"]}


def fact_evalsets(config: dict) -> list[str]:
    """Names of the ``calibration.evalsets`` of kind ``facts`` (the ones with frequency buckets)."""
    return [n for n, s in config.get("calibration", {}).get("evalsets", {}).items() if s.get("kind") == "facts"]


def fact_base_pairs(config: dict) -> list[tuple[str, str]]:
    """(model, evalset) of every ``calibration.models`` model on every ``facts`` set: base rows of the bucket table."""
    return [(m, e) for m in config.get("calibration", {}).get("models", []) for e in fact_evalsets(config)]


def fact_base_items(config: dict) -> list[str]:
    """The scored-items files of ``fact_base_pairs`` (same order)."""
    return [f"results/calibration/model~{m}/eval~{e}/items.parquet" for m, e in fact_base_pairs(config)]
