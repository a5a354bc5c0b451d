"""The knowledge world: country facts mentioned in pretraining text with a Zipf-like frequency.

Every country gets a seeded rank r = 1..n and ``floor(max_mentions / r**zipf_exponent)`` mentions; a mention is one
short paragraph stating that country's facts (the fields of ``settings["fields"]``, primary answers) in shuffled
order and in phrasings drawn with the seed. The base models then know frequent countries' facts well and rare ones
poorly, which is what makes multiple-choice calibration before and after SFT meaningful.

``stratified_split`` divides the countries into an SFT side and an evaluation side that span the same frequency
range (neighbouring ranks, a seeded coin per block), so the SFT data never states an evaluated country's fact.
Every function takes the one ``facts:`` settings dict of the config (``resolve_settings`` fills its defaults).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from lmcal.data.evalsets import synthetic
from lmcal.data.evalsets.schema import SCHEMA, check_items

# Mention-count bucket labels; ``bucket_edges`` are the inclusive upper mention counts of all but the last.
BUCKETS = ("never", "rare", "medium", "frequent")
DEFAULTS: dict[str, Any] = {
    "fields": list(synthetic.DEFAULT_FIELDS),
    "zipf_exponent": 1.3,
    "max_mentions": 900,
    "seed": 0,
    "eval_fraction": 0.5,
    "repeat": 1,                    # paragraphs per mention (fresh phrasings): the corpus's share of the stream
    "phrasings_per_fact": 2,        # each fact is stated this many times per paragraph, in different phrasings
    "paragraphs_per_doc": 4,
    "qa_share": 0.25,               # share of statements written as a web-style "Q: ... A: ..." pair
    "bucket_edges": [0, 3, 30],     # never = 0, rare = 1-3, medium = 4-30, frequent > 30
    "distractors": "matched",       # MCQ distractors as frequent in the corpus as the gold answer (or "random")
}

# Declarative phrasings; {c} = country, {a} = primary answer. QA phrasings use the evaluation's question wordings
# (synthetic.QUESTION_TEMPLATES) but not its prompt template ("Question: ...\nAnswer:").
PHRASINGS: dict[str, tuple[str, ...]] = {
    "capital": ("The capital of {c} is {a}.", "{a} is the capital of {c}.", "{c}'s capital city is {a}.",
                "The capital city of {c} is {a}."),
    "region": ("{c} lies in {a}.", "{c} is a country in {a}.", "{c} is located in {a}.", "{c} is part of {a}."),
    "subregion": ("{c} lies in {a}.", "{c} is located in {a}.", "{c} belongs to {a}."),
    "currency": ("The currency of {c} is {a}.", "{a} is the currency of {c}.", "In {c} people pay with {a}.",
                 "{c} uses {a} as its currency."),
    "language": ("The language of {c} is {a}.", "People in {c} speak {a}.", "{a} is spoken in {c}.",
                 "A language of {c} is {a}."),
    "demonym": ("People from {c} are called {a}.", "The people of {c} are known as {a}.",
                "A person from {c} is called {a}.", "{a} is the name for people from {c}."),
}
QA_FORMAT = "Q: {q} A: {a}."


def resolve_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """``DEFAULTS`` with ``settings`` over them, checked; unknown keys are an error (a typo would be silent)."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"facts: unknown settings {unknown} (known: {sorted(DEFAULTS)})")
    out = {**DEFAULTS, **settings}
    bad = [f for f in out["fields"] if f not in synthetic.FACT_FIELDS]
    if bad or not out["fields"]:
        raise ValueError(f"facts.fields: expected a non-empty subset of {synthetic.FACT_FIELDS}, got {out['fields']}")
    edges = [int(e) for e in out["bucket_edges"]]
    if len(edges) != len(BUCKETS) - 1 or edges != sorted(set(edges)) or edges[0] < 0:
        raise ValueError(f"facts.bucket_edges: expected {len(BUCKETS) - 1} increasing counts >= 0, got {edges}")
    if not 0 < float(out["eval_fraction"]) < 1:
        raise ValueError(f"facts.eval_fraction: expected a value in (0, 1), got {out['eval_fraction']}")
    for key in ("repeat", "phrasings_per_fact", "paragraphs_per_doc"):
        if int(out[key]) < 1:
            raise ValueError(f"facts.{key}: expected >= 1, got {out[key]}")
    if float(out["zipf_exponent"]) <= 0 or int(out["max_mentions"]) < 1:
        raise ValueError("facts: zipf_exponent must be > 0 and max_mentions >= 1")
    if out["distractors"] not in ("matched", "random"):
        raise ValueError(f"facts.distractors: expected 'matched' or 'random', got {out['distractors']!r}")
    if not 0 <= float(out["qa_share"]) <= 1:
        raise ValueError(f"facts.qa_share: expected a value in [0, 1], got {out['qa_share']}")
    out["fields"] = list(out["fields"])
    out["bucket_edges"] = edges
    return out


def bucket_of(mentions: int, edges: Sequence[int] = DEFAULTS["bucket_edges"]) -> str:
    """The bucket label of a mention count: the first bucket whose inclusive upper edge holds it."""
    for label, edge in zip(BUCKETS, edges):
        if mentions <= edge:
            return label
    return BUCKETS[-1]


def fact_mentions(countries: Sequence[str], *, zipf_exponent: float, max_mentions: int, seed: int,
                  bucket_edges: Sequence[int] = DEFAULTS["bucket_edges"]) -> pd.DataFrame:
    """``country, rank, mentions, bucket`` for each country (sorted by rank).

    A seeded permutation of the sorted country names gives ranks 1..n; mentions = floor(max_mentions / r**a).
    """
    names = sorted(dict.fromkeys(str(c) for c in countries))
    if not names:
        raise ValueError("countries: empty")
    order = np.random.default_rng(seed).permutation(len(names))
    rows = []
    for rank, i in enumerate(order, start=1):
        # The tiny epsilon keeps floor() exact where max_mentions / r**a is an integer up to rounding (8 / 2**1.5...)
        m = int(math.floor(max_mentions / rank ** zipf_exponent + 1e-9))
        rows.append({"country": names[i], "rank": rank, "mentions": m, "bucket": bucket_of(m, bucket_edges)})
    return pd.DataFrame(rows)


@functools.lru_cache(maxsize=8)
def _facts(fields: tuple[str, ...]) -> pd.DataFrame:
    return synthetic.country_facts(0, fields)


def world_facts(settings: dict[str, Any] | None = None) -> pd.DataFrame:
    """Every fact of the world (``country_facts`` columns + rank, mentions, bucket, side = sft | eval).

    Countries without a valid fact for the configured fields are not in the world at all (no mentions, no split).
    """
    s = resolve_settings(settings)
    facts = _facts(tuple(s["fields"])).copy()
    mentions = world_mentions(s)
    return facts.merge(mentions, on="country", how="inner", validate="many_to_one")


def world_mentions(settings: dict[str, Any] | None = None) -> pd.DataFrame:
    """``fact_mentions`` of the world's countries plus their ``side`` of ``stratified_split``."""
    s = resolve_settings(settings)
    countries = _facts(tuple(s["fields"]))["country"].unique()
    m = fact_mentions(countries, zipf_exponent=float(s["zipf_exponent"]), max_mentions=int(s["max_mentions"]),
                      seed=int(s["seed"]), bucket_edges=s["bucket_edges"])
    _, eval_side = stratified_split(m, float(s["eval_fraction"]), int(s["seed"]))
    return m.assign(side=np.where(m["country"].isin(eval_side["country"]), "eval", "sft"))


def stratified_split(mentions: pd.DataFrame, eval_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(sft, eval)`` halves of the countries that span the same frequency range.

    Countries sorted by rank fall into consecutive blocks of ``b = max(2, round(1 / min(f, 1 - f)))`` (pairs for
    f = 0.5); a seeded draw puts ``round(f * len(block))`` of each block on the evaluation side.
    """
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction: expected a value in (0, 1), got {eval_fraction}")
    for col in ("country", "rank"):
        if col not in mentions.columns:
            raise ValueError(f"mentions: missing column {col!r}")
    ordered = mentions.sort_values("rank", kind="stable").reset_index(drop=True)
    block = max(2, round(1 / min(eval_fraction, 1 - eval_fraction)))
    rng = np.random.default_rng([seed, 1])  # its own stream: the rank permutation uses ``seed`` alone
    is_eval = np.zeros(len(ordered), dtype=bool)
    for start in range(0, len(ordered), block):
        size = min(block, len(ordered) - start)
        k = int(round(eval_fraction * size))
        is_eval[start + rng.choice(size, k, replace=False)] = True
    return ordered[~is_eval].reset_index(drop=True), ordered[is_eval].reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ documents


def render_statement(field: str, country: str, answer: str, rng: np.random.Generator, qa_share: float,
                     exclude: frozenset[str] = frozenset()) -> tuple[str, str]:
    """``(sentence, template)``: one sentence stating a fact in a phrasing drawn with ``rng``.

    With probability ``qa_share`` it is a web-style "Q: <question> A: <answer>." pair. ``exclude`` lists
    templates already used for this fact in the paragraph (avoided while others are left).
    """
    if rng.random() < qa_share:
        options = [q for q in synthetic.QUESTION_TEMPLATES[field] if q not in exclude]
        if options:
            q = options[rng.integers(len(options))]
            return QA_FORMAT.format(q=q.format(country=country), a=answer), q
    options = [p for p in PHRASINGS[field] if p not in exclude] or list(PHRASINGS[field])
    p = options[rng.integers(len(options))]
    return p.format(c=country, a=answer), p


def _paragraph(facts: pd.DataFrame, rng: np.random.Generator, s: dict[str, Any]) -> str:
    sentences = []
    for fact in facts.itertuples(index=False):
        used: set[str] = set()
        for _ in range(int(s["phrasings_per_fact"])):
            text, template = render_statement(fact.field, fact.country, str(fact.answer), rng,
                                              float(s["qa_share"]), frozenset(used))
            used.add(template)
            sentences.append(text)
    order = rng.permutation(len(sentences))
    return " ".join(sentences[i] for i in order)


def fact_documents(settings: dict[str, Any] | None = None) -> pd.DataFrame:
    """The fact corpus in the documents schema: ``doc_id`` (``facts/<i>``), ``text``, ``group`` (= "facts").

    ``repeat`` paragraphs per mention (each with its own phrasings and order): a ladder model sees only a
    fraction of its token stream, so ``repeat`` sets how often it meets a fact without moving the Zipf cutoff
    (which countries are never mentioned). Paragraphs are shuffled with the seed and grouped
    ``paragraphs_per_doc`` to a document (blank line between paragraphs).
    """
    s = resolve_settings(settings)
    facts = world_facts(s)
    rng = np.random.default_rng([int(s["seed"]), 2])
    by_country = {c: g for c, g in facts.groupby("country", sort=True)}
    mentions = facts.drop_duplicates("country").sort_values("rank")
    paragraphs = [_paragraph(by_country[row.country], rng, s)
                  for row in mentions.itertuples(index=False) for _ in range(int(row.mentions) * int(s["repeat"]))]
    if not paragraphs:
        raise ValueError("facts: no country is mentioned (raise max_mentions)")
    order = rng.permutation(len(paragraphs))
    k = int(s["paragraphs_per_doc"])
    texts = ["\n\n".join(paragraphs[i] for i in order[j: j + k]) for j in range(0, len(order), k)]
    return pd.DataFrame({"doc_id": [f"facts/{i}" for i in range(len(texts))], "text": texts, "group": "facts"})


# ------------------------------------------------------------------------------------ evaluation and SFT


ITEM_PREFIX = "facts"


def answer_mentions(facts: pd.DataFrame) -> dict[tuple[str, str], int]:
    """(field, answer lower-cased) → how many mentions state that answer: the sum over the countries whose primary
    answer it is (a value shared by many countries, "Europe", "English", is frequent in the corpus)."""
    key = facts["answer"].astype(str).str.lower()
    return {(str(f), str(a)): int(m) for (f, a), m in facts.groupby([facts["field"], key])["mentions"].sum().items()}


def matched_mcq(eval_facts: pd.DataFrame, facts: pd.DataFrame, n_choices: int = 4, seed: int = 0) -> pd.DataFrame:
    """MCQ items whose distractors are answers stated about as often in the corpus as the gold answer.

    With random distractors a frequent country's answer is also the most frequent string among its choices, so
    a model that knows only answer frequencies (not which country has which answer) looks knowledgeable exactly
    on the frequent bucket. Here the n-1 distractors are the same field's other answers nearest to the gold in
    log(1 + mentions) (seeded tie-break), never an accepted answer of the item; the gold position is uniform.
    """
    if n_choices < 2:
        raise ValueError(f"n_choices: expected >= 2, got {n_choices}")
    freq = answer_mentions(facts)
    values = synthetic.field_answers(facts)
    rng = np.random.default_rng(seed)
    rows = []
    for fact in eval_facts.itertuples(index=False):
        accepted = {str(a).lower() for a in fact.accepted} | {str(fact.answer).lower()}
        cands = [v for v in values[fact.field] if v.lower() not in accepted]
        if len(cands) < n_choices - 1:
            raise ValueError(f"n_choices: field {fact.field!r} has only {len(cands)} distractors for {fact.fact_id!r}")
        gold_f = np.log1p(freq[(fact.field, str(fact.answer).lower())])
        dist = np.abs(np.log1p([freq[(fact.field, v.lower())] for v in cands]) - gold_f)
        order = np.lexsort((rng.random(len(cands)), dist))  # nearest first, ties broken by the seed
        distractors = [cands[i] for i in order[: n_choices - 1]]
        distractors = [distractors[i] for i in rng.permutation(len(distractors))]
        gold = int(rng.integers(n_choices))
        rows.append({"item_id": f"{ITEM_PREFIX}:{fact.fact_id}", "question": fact.question,
                     "choices": distractors[:gold] + [str(fact.answer)] + distractors[gold:], "gold": gold,
                     "source": ITEM_PREFIX, "category": fact.field})
    return check_items(pd.DataFrame(rows, columns=list(SCHEMA)))


def facts_evalset(settings: dict[str, Any] | None = None, n_items: int | None = None, n_choices: int = 4,
                  seed: int = 0) -> pd.DataFrame:
    """MCQ items (evaluation-set schema) on the evaluation side of the world; ``item_id`` = facts:<field>:<country>.

    ``n_items`` None keeps every evaluation fact; otherwise a seeded sample. Distractors (``settings.distractors``):
    ``matched`` = answers as frequent in the corpus as the gold (``matched_mcq``), ``random`` = any other
    country's answers of the same field (``synthetic.facts_to_mcq``).
    """
    s = resolve_settings(settings)
    facts = world_facts(s)
    eval_facts = facts[facts["side"] == "eval"].reset_index(drop=True)
    if n_items is not None:
        if not 1 <= n_items <= len(eval_facts):
            raise ValueError(f"n_items: expected 1..{len(eval_facts)} (evaluation facts available), got {n_items}")
        keep = np.sort(np.random.default_rng(seed).choice(len(eval_facts), n_items, replace=False))
        eval_facts = eval_facts.iloc[keep].reset_index(drop=True)
    if s["distractors"] == "matched":
        return matched_mcq(eval_facts, facts, n_choices=n_choices, seed=seed)
    items = synthetic.facts_to_mcq(eval_facts, pool=facts, n_choices=n_choices, seed=seed)
    items["item_id"] = items["item_id"].str.replace(r"^countries:", f"{ITEM_PREFIX}:", regex=True)
    items["source"] = ITEM_PREFIX
    return items


def evalset_from_spec(spec: dict[str, Any]) -> pd.DataFrame:
    """A ``calibration.evalsets`` entry of kind ``facts`` (``settings`` = the ``facts:`` block) → its items."""
    if spec.get("kind") != "facts":
        raise ValueError(f"kind: expected 'facts', got {spec.get('kind')!r}")
    n_items = spec.get("n_items")
    return facts_evalset(spec.get("settings"), n_items=None if n_items is None else int(n_items),
                         n_choices=int(spec.get("n_choices", 4)), seed=int(spec.get("seed", 0)))


def item_buckets(item_ids: Sequence[str], settings: dict[str, Any] | None = None) -> pd.DataFrame:
    """``item_id, field, country, mentions, bucket, side`` of evaluation items (ids facts:<field>:<country>)."""
    rows = []
    for item_id in item_ids:
        m = re.fullmatch(rf"{ITEM_PREFIX}:([a-z]+):(.+)", str(item_id))
        if not m:
            raise ValueError(f"item_id: {item_id!r} is not a fact-world item (facts:<field>:<country>)")
        rows.append({"item_id": str(item_id), "field": m.group(1), "country": m.group(2)})
    out = pd.DataFrame(rows, columns=["item_id", "field", "country"])
    mentions = world_mentions(settings)
    out = out.merge(mentions[["country", "mentions", "bucket", "side"]], on="country", how="left")
    missing = out.loc[out["mentions"].isna(), "country"]
    if len(missing):
        raise ValueError(f"item_id: country {missing.iloc[0]!r} is not in the fact world of these settings")
    return out.astype({"mentions": int})


def sft_facts(settings: dict[str, Any] | None = None, phrasing_seed: int = 0) -> pd.DataFrame:
    """The SFT side's facts with the question wording drawn by ``phrasing_seed``."""
    s = resolve_settings(settings)
    side = world_mentions(s)
    sft_countries = set(side.loc[side["side"] == "sft", "country"])
    facts = synthetic.country_facts(int(phrasing_seed), tuple(s["fields"]))
    return facts[facts["country"].isin(sft_countries)].reset_index(drop=True)


def fact_conversations(settings: dict[str, Any] | None = None, phrasing_seeds: Sequence[int] = (0,),
                       max_examples: int | None = None, seed: int = 0) -> pd.DataFrame:
    """SFT conversations (``conv_id, messages, country``): one user question, the bare answer from the assistant,
    for every SFT-side fact and phrasing seed (duplicates of question and answer dropped); no evaluation
    country appears. ``max_examples`` keeps a seeded sample.
    """
    import json

    facts = pd.concat([sft_facts(settings, s).assign(conv_id=lambda d, s=s: d["fact_id"] + f"#p{s}")
                       for s in phrasing_seeds], ignore_index=True)
    facts = facts.drop_duplicates(subset=["question", "answer"]).reset_index(drop=True)
    if max_examples is not None and max_examples < len(facts):
        keep = np.sort(np.random.default_rng(seed).choice(len(facts), max_examples, replace=False))
        facts = facts.iloc[keep].reset_index(drop=True)
    messages = [json.dumps([{"role": "user", "content": q}, {"role": "assistant", "content": str(a)}],
                           ensure_ascii=False) for q, a in zip(facts["question"], facts["answer"])]
    return pd.DataFrame({"conv_id": facts["conv_id"], "messages": messages, "country": facts["country"]})
