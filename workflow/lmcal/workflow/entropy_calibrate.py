"""Parse-time helpers for workflow/rules/entropy_calibrate.smk (torch-free)."""

from __future__ import annotations

SUMMARY = "results/entropy/calibrated/summary.json"


def settings(config: dict) -> dict:
    """The ``entropy_calibrate`` section, checked against the entropy study it reuses.

    Its models and datasets must be entropy-study ones (the calibrated runs reuse those prompts, seeds and
    per-decode results), and its a_grid must hold 0 (the base model, so the fitted ``a`` never loses log loss).
    """
    cal = config.get("entropy_calibrate", {}) or {}
    ent = config.get("entropy", {}) or {}
    if not cal.get("enabled", True):
        return cal
    for key, known in (("models", ent.get("models", [])), ("datasets", ent.get("datasets", []))):
        bad = [x for x in cal.get(key, []) if x not in known]
        if bad:
            raise ValueError(f"config key entropy_calibrate.{key}: {bad} not in entropy.{key} {list(known)} "
                             "(the calibrated sampler reuses the entropy study's prompts and results)")
    if 0 not in [float(a) for a in cal.get("a_grid", [])]:
        raise ValueError(f"config key entropy_calibrate.a_grid: {cal.get('a_grid')} must contain 0 (the base model)")
    return cal


def enabled(config: dict) -> bool:
    """Whether the calibrated study runs: enabled, the entropy study on, and at least one model, dataset, method."""
    cal = settings(config)
    return bool("entropy" in config.get("studies", []) and cal.get("enabled", True) and cal.get("models")
                and cal.get("datasets") and cal.get("methods"))


def summary_targets(config: dict) -> list[str]:
    """What the entropy study's summary waits for: the calibrated summary when the study is enabled, else nothing."""
    return [SUMMARY] if enabled(config) else []
