"""Parse-time helpers for workflow/rules/entropy_calibrate.smk (torch-free)."""

from __future__ import annotations

SUMMARY = "results/entropy/calibrated/summary.json"
METHODS = ("lookahead", "rollout", "head")  # lmcal.entropy.calibrate.METHODS (kept equal by a test)
#: keys of methods.head (lmcal.entropy.calibrate_head.HEAD_DEFAULTS, kept equal by a test)
HEAD_KEYS = ("k", "m", "h", "n_steps", "epochs", "lr", "l2", "val_fraction")


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
    methods = cal.get("methods", {}) or {}
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"config key entropy_calibrate.methods: unknown method(s) {bad} (known: {list(METHODS)})")
    if "head" in methods:
        _check_head(methods["head"], cal, ent)
    return cal


def _check_head(head, cal: dict, ent: dict) -> None:
    """methods.head: known keys, and a fit half large enough to hold train and validation documents."""
    if head is not None and not isinstance(head, dict):
        raise ValueError(f"config key entropy_calibrate.methods.head: want a mapping of settings, got {head!r}")
    unknown = sorted(set(head or {}) - set(HEAD_KEYS))
    if unknown:
        raise ValueError(f"config key entropy_calibrate.methods.head: unknown key(s) {unknown} (known: {list(HEAD_KEYS)})")
    n_docs = ent.get("n_samples")
    if isinstance(n_docs, int):
        n_fit = min(max(round(float(cal.get("fit_fraction", 0.5)) * n_docs), 1), n_docs - 1)
        if n_fit < 2:
            raise ValueError(f"config key entropy_calibrate.methods.head: the fit half holds {n_fit} document(s) "
                             f"(entropy.n_samples {n_docs} x fit_fraction); the head needs >= 2 (train, validation)")


HEAD = "results/entropy/calibrated/model~{model}/head.safetensors"


def head_input(cal: dict) -> list[str]:
    """The trained-head input pattern of entropy_calibrate_run: ``[HEAD]`` when method head is on, else []."""
    return [HEAD] if "head" in (cal.get("methods") or {}) else []


def enabled(config: dict) -> bool:
    """Whether the calibrated study runs: enabled, the entropy study on, and at least one model, dataset, method."""
    cal = settings(config)
    return bool("entropy" in config.get("studies", []) and cal.get("enabled", True) and cal.get("models")
                and cal.get("datasets") and cal.get("methods"))


def summary_targets(config: dict) -> list[str]:
    """What the entropy study's summary waits for: the calibrated summary when the study is enabled, else nothing."""
    return [SUMMARY] if enabled(config) else []
