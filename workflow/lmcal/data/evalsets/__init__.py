"""Multiple-choice evaluation sets in one schema (``schema``): offline synthetic sets (``synthetic``)
and hub benchmarks (``hub``); ``build_evalset`` builds one from its config entry.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from lmcal.data.arithmetic import OP_NAMES
from lmcal.data.evalsets.schema import KINDS, subsample
from lmcal.data.evalsets.synthetic import (
    DEFAULT_FIELDS,
    arithmetic_evalset,
    countries_evalset,
)


def build_evalset(spec: dict[str, Any]) -> pd.DataFrame:
    """Build one evaluation set from its config entry (see ``workflow/schemas/calibration.schema.yaml``).

    ``kind`` picks the builder; ``countries``/``arithmetic`` take their keyword arguments from the spec, hub
    kinds read ``path`` (local file/dir) or ``hub_id`` (+ ``hub_config``, ``split``, ``revision``) and keep a
    seeded sample of ``n_items``.
    """
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    seed, n_items = int(spec.get("seed", 0)), spec.get("n_items")
    if kind == "countries":
        return countries_evalset(
            n_items=int(n_items or 150), n_choices=int(spec.get("n_choices", 4)), seed=seed,
            fields=tuple(spec.get("fields", DEFAULT_FIELDS)), eval_fraction=float(spec.get("eval_fraction", 0.5)),
            split_seed=int(spec.get("split_seed", 0)),
        )
    if kind == "facts":  # lmcal.data.factworld builds on this package, so it cannot be called from here
        raise ValueError("kind: 'facts' sets are built by lmcal.data.factworld.evalset_from_spec")
    if kind == "arithmetic":
        return arithmetic_evalset(
            n_items=int(n_items or 150), n_choices=int(spec.get("n_choices", 4)), seed=seed,
            max_operand=int(spec.get("max_operand", 99)), ops=spec.get("ops", OP_NAMES),
        )
    source = spec.get("path") or spec.get("hub_id")
    if not source:
        raise ValueError(f"path/hub_id: a {kind} evaluation set needs a local path or a hub id")
    from lmcal.data.evalsets import hub as hub_evalsets

    raw = hub_evalsets.load_records(
        str(source), config=spec.get("hub_config"), split=spec.get("split", "test"), revision=spec.get("revision")
    )
    items = hub_evalsets.HUB_LOADERS[kind](raw, source=spec.get("name", kind))
    return subsample(items, None if n_items is None else int(n_items), seed)
