"""Claim records: one headline finding of a study summary with its interval and the rule that decides it.

Every study summary carries ``"claims": [record, ...]`` and the README's results section is generated from these
records only (``lmcal.report``), so a number quoted there always has a rule and an interval computed by the
pipeline. JSON shape of one record::

    {"id": "emergence.jump.add1-scratchpad",        # unique within a summary, dotted
     "claim": "exact match jumps while ...",         # what is claimed, in words
     "value": 0.12,                                  # the statistic the rule reads (number, or null)
     "ci": [0.05, 0.2],                              # its interval, or null when none applies
     "interval": "min-max over 3 seeds",             # what the interval is
     "rule": "jump if EM rises >= 0.1 and ...",      # the verdict rule, in words, with its thresholds
     "verdict": true,                                # the rule applied to the pooled data (or null)
     "seeds_agree": "3/3",                           # per-seed verdicts equal to ``verdict`` / seeds (or null)
     "n_seeds": 3}                                   # seeds behind the claim (or null)

Torch-free and light: core may be imported by every layer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

KEYS = ("id", "claim", "value", "ci", "interval", "rule", "verdict", "seeds_agree", "n_seeds")


def _number(x: Any, what: str) -> float | None:
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)) and not hasattr(x, "__float__"):
        raise ValueError(f"{what} must be a number or None, got {x!r}")
    x = float(x)
    return x if math.isfinite(x) else None  # JSON has no NaN/inf: a non-finite statistic is "not available"


def claim(id: str, text: str, value: Any, *, rule: str, ci: Sequence[Any] | None = None,
          interval: str | None = None, verdict: bool | None = None,
          seed_verdicts: Iterable[bool] | None = None) -> dict[str, Any]:
    """One claim record (see the module doc). ``seed_verdicts``: the rule applied to each seed alone; the
    record then says how many agree with ``verdict`` ("2/3") and n_seeds."""
    if not id or not isinstance(id, str):
        raise ValueError(f"claim id must be a non-empty string, got {id!r}")
    if not rule or not isinstance(rule, str):
        raise ValueError(f"claim {id}: rule must be a non-empty string")
    if verdict is not None and not isinstance(verdict, bool):
        raise ValueError(f"claim {id}: verdict must be True, False or None, got {verdict!r}")
    lo_hi = None
    if ci is not None:
        if len(ci) != 2:
            raise ValueError(f"claim {id}: ci must be [lo, hi], got {ci!r}")
        lo, hi = _number(ci[0], f"claim {id}: ci[0]"), _number(ci[1], f"claim {id}: ci[1]")
        if lo is not None and hi is not None:
            if lo > hi:
                raise ValueError(f"claim {id}: ci lower bound {lo} exceeds upper bound {hi}")
            lo_hi = [lo, hi]
        if interval is None:
            raise ValueError(f"claim {id}: a ci needs an interval description (what the interval is)")
    agree, n_seeds = None, None
    if seed_verdicts is not None:
        per_seed = [bool(v) for v in seed_verdicts]
        n_seeds = len(per_seed)
        if verdict is not None and per_seed:
            agree = f"{sum(v == verdict for v in per_seed)}/{n_seeds}"
    val = value if isinstance(value, bool) else _number(value, f"claim {id}: value")
    return {"id": id, "claim": text, "value": val, "ci": lo_hi, "interval": interval if lo_hi else None,
            "rule": rule, "verdict": verdict, "seeds_agree": agree, "n_seeds": n_seeds}


def check_claims(records: Any, where: str = "claims") -> list[dict[str, Any]]:
    """Validate a list of claim records read back from JSON (the shape above); returns it."""
    if not isinstance(records, list):
        raise ValueError(f"{where}: expected a list of claim records, got {type(records).__name__}")
    seen: set[str] = set()
    for i, r in enumerate(records):
        if not isinstance(r, dict) or set(r) != set(KEYS):
            got = sorted(r) if isinstance(r, dict) else type(r).__name__
            raise ValueError(f"{where}[{i}]: a claim record has exactly the keys {list(KEYS)}, got {got}")
        if r["id"] in seen:
            raise ValueError(f"{where}[{i}]: duplicate claim id {r['id']!r}")
        seen.add(r["id"])
        if r["ci"] is not None and (len(r["ci"]) != 2 or r["ci"][0] > r["ci"][1]):
            raise ValueError(f"{where}[{i}] ({r['id']}): ci must be [lo, hi] with lo <= hi, got {r['ci']}")
    return records


def compare_claims(runs: dict[str, Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Which claims held across runs (e.g. two reseeds of one study): one row per claim id, in first-run order.

    ``runs`` maps a run label to its claim records. A claim *held* when every run has it and gave it the same
    non-null verdict; ``verdicts`` lists each run's verdict (None where it is missing), ``values`` its value.
    """
    if len(runs) < 2:
        raise ValueError(f"runs: need at least two runs to compare, got {list(runs)}")
    by_run = {label: {r["id"]: r for r in check_claims(list(recs), f"claims of {label}")}
              for label, recs in runs.items()}
    ids = list(dict.fromkeys(i for recs in by_run.values() for i in recs))
    rows = []
    for cid in ids:
        recs = [by_run[label].get(cid) for label in runs]
        verdicts = [None if r is None else r["verdict"] for r in recs]
        first = next(r for r in recs if r is not None)
        held = all(v is not None for v in verdicts) and len(set(verdicts)) == 1
        rows.append({"id": cid, "claim": first["claim"], "verdicts": verdicts,
                     "values": [None if r is None else r["value"] for r in recs],
                     "seeds_agree": [None if r is None else r["seeds_agree"] for r in recs], "held": held})
    return rows
