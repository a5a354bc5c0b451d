"""Multiple-choice evaluation sets in one schema.

Every set is a DataFrame with columns ``item_id`` (str, unique), ``question`` (str; the context for HellaSwag),
``choices`` (list of str), ``gold`` (int index into choices), ``source`` (str) and ``category`` (str: fact field,
arithmetic operation, MMLU subject, HellaSwag activity).

Offline sets: real-world facts from the ``countryinfo`` package (capital, region, subregion, currency, language,
demonym; currency and language codes named in English with ``babel``) and seeded arithmetic. Facts are split into
instruction-tuning and evaluation facts by country (``split_facts``), so no country's facts appear on both sides.
Hub sets (MMLU, HellaSwag, ARC) are converted by ``lmcal.data.evalsets.hub``.
"""

from __future__ import annotations

import functools
import glob
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lmcal.data import arithmetic, splits
from lmcal.data.evalsets.schema import SCHEMA, check_items

FACT_FIELDS = ("capital", "region", "subregion", "currency", "language", "demonym")
DEFAULT_FIELDS = ("capital", "region", "currency", "language", "demonym")
# ISO 4217 fund codes and units of account (Swiss WIR, Chilean UF, ...): listed per country but not money in
# circulation, so never the answer to "what is the currency of".
FUND_CODES = frozenset({"BOV", "CHE", "CHW", "CLF", "COU", "MXV", "USN", "USS", "UYI", "UYW", "XSU", "XUA"})

# Several phrasings per field; a fact's phrasing is drawn with the seed so instruction data is not monotone.
QUESTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "capital": ("What is the capital of {country}?", "Which city is the capital of {country}?"),
    "region": ("In which region of the world is {country}?", "Which world region is {country} part of?"),
    "subregion": ("In which subregion of the world is {country}?", "Which subregion is {country} part of?"),
    "currency": ("What is the currency of {country}?", "Which currency is used in {country}?"),
    "language": ("Which language is spoken in {country}?", "What is a language of {country}?"),
    "demonym": ("What are people from {country} called?", "What is the demonym of {country}?"),
}


# ---------------------------------------------------------------------------------------------- country facts


def _countryinfo_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("countryinfo")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the countryinfo package is required for the country evaluation set")
    return Path(spec.submodule_search_locations[0]) / "data"


@functools.lru_cache(maxsize=1)
def _english():
    from babel import Locale

    return Locale("en")


def _field_values(record: dict[str, Any], field: str) -> list[str]:
    """All accepted answers of one field for one country record (first = the primary answer)."""
    if field == "currency":
        codes = [c for c in (record.get("currencies") or []) if c not in FUND_CODES]
        names = [_english().currencies.get(code) for code in codes]
        # CLDR marks superseded currencies "(2000–2016)"; the bare name is what a question expects.
        raw = [re.sub(r"\s*\(.*\)$", "", n) for n in names if n]
    elif field == "language":
        raw = [_english().languages.get(code) for code in (record.get("languages") or [])]
    elif field == "demonym":
        raw = str(record.get("demonym") or "").split(",")
    else:
        raw = record.get(field)
        raw = [raw] if isinstance(raw, str) else raw
    values = []
    for v in raw or []:
        v = str(v or "").strip()
        if v and v.lower() not in {x.lower() for x in values}:
            values.append(v)
    return values


def country_facts(seed: int = 0, fields: Sequence[str] = DEFAULT_FIELDS) -> pd.DataFrame:
    """One row per (country, field) fact: ``fact_id, country, field, question, answer, accepted``.

    ``answer`` is the primary answer and ``accepted`` every valid one (e.g. all of a country's languages).
    Facts whose answer contains the country name or vice versa (Luxembourg's capital, "American Samoan") are
    dropped because the question gives them away. ``seed`` picks each fact's question phrasing.
    """
    bad = [f for f in fields if f not in FACT_FIELDS]
    if bad or not fields:
        raise ValueError(f"fields: expected a non-empty subset of {FACT_FIELDS}, got {list(fields)}")
    rng = np.random.default_rng(seed)
    rows, seen = [], set()
    for path in sorted(glob.glob(str(_countryinfo_dir() / "*.json"))):
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        country = str(record.get("name") or "").strip()
        if not country or country in seen:
            continue
        seen.add(country)
        for field in fields:
            values = _field_values(record, field)
            if not values or any(v.lower() in country.lower() or country.lower() in v.lower() for v in values):
                continue
            templates = QUESTION_TEMPLATES[field]
            rows.append(
                {
                    "fact_id": f"{field}:{country}",
                    "country": country,
                    "field": field,
                    "question": templates[rng.integers(len(templates))].format(country=country),
                    "answer": values[0],
                    "accepted": values,
                }
            )
    return pd.DataFrame(rows)


def is_eval_country(country: str, eval_fraction: float, seed: int = 0) -> bool:
    """Whether ``country`` belongs to the evaluation side of the split.

    Decided by a hash of (seed, country) alone, so the assignment is the same whatever subset of fields or
    countries a caller holds, and a larger ``eval_fraction`` only moves countries into evaluation.
    """
    if not 0.0 <= eval_fraction <= 1.0:
        raise ValueError(f"eval_fraction: expected a value in [0, 1], got {eval_fraction}")
    # BLAKE2b of "seed NUL country", as before the splits were merged: the default country split does not move.
    return splits.is_held_out(f"{seed}\x00{country}", eval_fraction, digest="blake2b")


def split_facts(
    facts: pd.DataFrame, eval_fraction: float = 0.5, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split facts by country into ``(sft_facts, eval_facts)``; no country appears in both."""
    if "country" not in facts.columns:
        raise ValueError("facts: missing column 'country'")
    is_eval = facts["country"].map(lambda c: is_eval_country(str(c), eval_fraction, seed)).astype(bool)
    return facts[~is_eval].reset_index(drop=True), facts[is_eval].reset_index(drop=True)


def field_answers(pool: pd.DataFrame) -> dict[str, list[str]]:
    """Per field, every primary answer in ``pool`` once (case-insensitively), sorted: the distractor pool."""
    values: dict[str, list[str]] = {}
    for field, group in pool.groupby("field", sort=True):
        uniq: dict[str, str] = {}
        for v in group["answer"]:
            uniq.setdefault(str(v).lower(), str(v))
        values[str(field)] = sorted(uniq.values())
    return values


def facts_to_mcq(
    facts: pd.DataFrame, pool: pd.DataFrame | None = None, n_choices: int = 4, seed: int = 0
) -> pd.DataFrame:
    """Multiple-choice items from facts, in the evaluation-set schema.

    Distractors are other countries' primary answers of the same field, taken from ``pool`` (default: ``facts``),
    deduplicated case-insensitively and never equal to any accepted answer of the item; the gold position is
    uniform. Both draws use ``seed``.
    """
    if n_choices < 2:
        raise ValueError(f"n_choices: expected >= 2, got {n_choices}")
    values = field_answers(facts if pool is None else pool)
    rng = np.random.default_rng(seed)
    rows = []
    for fact in facts.itertuples(index=False):
        accepted = {str(a).lower() for a in fact.accepted} | {str(fact.answer).lower()}
        candidates = [v for v in values.get(fact.field, []) if v.lower() not in accepted]
        if len(candidates) < n_choices - 1:
            raise ValueError(
                f"n_choices: field {fact.field!r} has only {len(candidates)} distractors for {fact.fact_id!r}"
            )
        distractors = [candidates[i] for i in rng.choice(len(candidates), n_choices - 1, replace=False)]
        gold = int(rng.integers(n_choices))
        rows.append(
            {
                "item_id": f"countries:{fact.fact_id}",
                "question": fact.question,
                "choices": distractors[:gold] + [str(fact.answer)] + distractors[gold:],
                "gold": gold,
                "source": "countries",
                "category": fact.field,
            }
        )
    return check_items(pd.DataFrame(rows, columns=list(SCHEMA)))


def _round_robin(groups: list[pd.DataFrame], n: int) -> pd.DataFrame:
    """Take rows alternately from each group until ``n`` are taken (balances fields, fills from the rest)."""
    iters = [list(g.itertuples(index=False)) for g in groups]
    out, k = [], 0
    while len(out) < n and any(iters):
        if iters[k % len(iters)]:
            out.append(iters[k % len(iters)].pop(0))
        k += 1
    return pd.DataFrame(out, columns=groups[0].columns)


def countries_evalset(
    n_items: int = 150,
    n_choices: int = 4,
    seed: int = 0,
    fields: Sequence[str] = DEFAULT_FIELDS,
    eval_fraction: float = 0.5,
    split_seed: int = 0,
) -> pd.DataFrame:
    """Country-fact MCQ from the evaluation side of ``split_facts(..., eval_fraction, split_seed)``.

    Items are balanced across ``fields``; distractors come from every country (values are not facts about the
    item's country, so they leak nothing).
    """
    facts = country_facts(seed, fields)
    _, eval_facts = split_facts(facts, eval_fraction, split_seed)
    rng = np.random.default_rng(seed)
    groups = [g.iloc[rng.permutation(len(g))] for _, g in eval_facts.groupby("field", sort=True)]
    if n_items < 1 or n_items > len(eval_facts):
        raise ValueError(f"n_items: expected 1..{len(eval_facts)} (evaluation facts available), got {n_items}")
    return facts_to_mcq(_round_robin(groups, n_items), pool=facts, n_choices=n_choices, seed=seed)


# ------------------------------------------------------------------------------------------------- arithmetic


def arithmetic_evalset(
    n_items: int = 150,
    n_choices: int = 4,
    seed: int = 0,
    max_operand: int = 99,
    ops: Sequence[str] = arithmetic.OP_NAMES,
) -> pd.DataFrame:
    """Seeded "What is a op b?" items with near-miss distractors (±1, ±2, ±10, wrong operation, ...).

    Operands are uniform in 1..max_operand, ``ops`` names the operators (``add``, ``sub``, ``mul``) drawn
    uniformly, subtraction is ordered to stay non-negative; ``category`` names the operation (addition, ...).
    """
    if n_items < 1:
        raise ValueError(f"n_items: expected >= 1, got {n_items}")
    if n_choices < 2 or n_choices > 8:
        raise ValueError(f"n_choices: expected 2..8, got {n_choices}")
    if max_operand < 2:
        raise ValueError(f"max_operand: expected >= 2, got {max_operand}")
    ops = arithmetic.check_ops(ops)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_items):
        op, a, b = arithmetic.draw_problem(rng, ops, 1, max_operand + 1)
        answer = arithmetic.apply_op(op, a, b)
        near = {answer + d for d in (-20, -10, -3, -2, -1, 1, 2, 3, 10, 20)}
        near |= {o.apply(a, b) for o in arithmetic.OPS.values()}  # the wrong operation is a tempting miss
        candidates = sorted(v for v in near if v >= 0 and v != answer)
        distractors = [candidates[j] for j in rng.choice(len(candidates), n_choices - 1, replace=False)]
        gold = int(rng.integers(n_choices))
        choices = [str(v) for v in distractors[:gold] + [answer] + distractors[gold:]]
        rows.append(
            {
                "item_id": f"arithmetic:{seed}:{i}",
                "question": arithmetic.symbol_question(op, a, b),
                "choices": choices,
                "gold": gold,
                "source": "arithmetic",
                "category": arithmetic.OPS[op].noun,
            }
        )
    return check_items(pd.DataFrame(rows, columns=list(SCHEMA)))
