"""The knowledge world: Zipf mention counts, the stratified split, true fact documents, clean SFT/eval sides,
train-only fact corpus in the ladder's streams, and the per-bucket calibration table."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from lmcal.calibration import buckets as bucket_metrics
from lmcal.calibration.metrics import expected_calibration_error
from lmcal.data import factworld as fw
from lmcal.data.evalsets import build_evalset
from lmcal.data.evalsets import synthetic


def test_mentions_follow_the_formula():
    m = fw.fact_mentions(["a", "b", "c", "d", "e"], zipf_exponent=1.0, max_mentions=6, seed=3)
    assert m["rank"].tolist() == [1, 2, 3, 4, 5]
    assert m["mentions"].tolist() == [6, 3, 2, 1, 1]  # floor(6 / r)
    assert sorted(m["country"]) == ["a", "b", "c", "d", "e"]
    m2 = fw.fact_mentions(["a", "b", "c", "d"], zipf_exponent=1.5, max_mentions=8, seed=0, bucket_edges=[0, 1, 2])
    assert m2["mentions"].tolist() == [8, 2, 1, 1]  # 8/2**1.5 = 2.83, 8/3**1.5 = 1.54, 8/8 = 1 exactly
    assert m2["bucket"].tolist() == ["frequent", "medium", "rare", "rare"]
    # another seed permutes who gets which rank, not the counts
    other = fw.fact_mentions(["a", "b", "c", "d", "e"], zipf_exponent=1.0, max_mentions=6, seed=4)
    assert other["mentions"].tolist() == m["mentions"].tolist()
    assert fw.bucket_of(0) == "never" and fw.bucket_of(3) == "rare" and fw.bucket_of(4) == "medium"
    assert fw.bucket_of(30) == "medium" and fw.bucket_of(31) == "frequent"


def test_default_world_has_never_rare_and_frequent_countries():
    m = fw.world_mentions()
    never = (m["mentions"] == 0).mean()
    assert 0.2 <= never <= 0.3, never
    assert (m["mentions"] >= 100).sum() >= 3
    assert set(m["bucket"]) == set(fw.BUCKETS)


@pytest.mark.parametrize("fraction", [0.5, 0.25])
def test_split_is_disjoint_covering_and_frequency_matched(fraction):
    m = fw.fact_mentions([f"c{i:03d}" for i in range(101)], zipf_exponent=1.2, max_mentions=300, seed=1)
    sft, ev = fw.stratified_split(m, fraction, seed=5)
    assert not set(sft["country"]) & set(ev["country"])
    assert sorted(set(sft["country"]) | set(ev["country"])) == sorted(m["country"])
    assert abs(len(ev) - fraction * len(m)) <= 1
    # within every block of neighbouring ranks the evaluation side holds its share: ranks interleave
    block = max(2, round(1 / min(fraction, 1 - fraction)))
    per_block = ev["rank"].sub(1).floordiv(block).value_counts()
    assert set(per_block) == {round(fraction * block)}
    # both halves' mention-count distributions match: quantiles of log(1 + mentions) agree closely
    qs = np.linspace(0.05, 0.95, 10)
    a, b = np.log1p(sft["mentions"]), np.log1p(ev["mentions"])
    assert np.max(np.abs(np.quantile(a, qs) - np.quantile(b, qs))) < 0.5


def test_split_seed_changes_assignment_but_not_balance():
    m = fw.fact_mentions([f"c{i}" for i in range(40)], zipf_exponent=1.0, max_mentions=40, seed=0)
    e1 = set(fw.stratified_split(m, 0.5, 0)[1]["country"])
    e2 = set(fw.stratified_split(m, 0.5, 1)[1]["country"])
    assert e1 != e2 and len(e1) == len(e2) == 20


def _parse_regex(countries: list[str]) -> re.Pattern:
    """One alternation of every phrasing (declarative and Q/A) with the country names spelled out."""
    names = "|".join(re.escape(c) for c in sorted(countries, key=len, reverse=True))
    alts = []
    for field, templates in fw.PHRASINGS.items():
        for t in templates:
            pat = re.escape(t).replace(r"\{c\}", f"(?P<c_{len(alts)}>{names})").replace(r"\{a\}", f"(?P<a_{len(alts)}>.+?)")
            alts.append((field, pat))
        for q in synthetic.QUESTION_TEMPLATES[field]:
            qpat = re.escape(q).replace(r"\{country\}", f"(?P<c_{len(alts)}>{names})")
            alts.append((field, re.escape("Q: ") + qpat + re.escape(" A: ") + f"(?P<a_{len(alts)}>.+?)" + r"\."))
    return alts


def test_fact_documents_state_only_true_facts():
    settings = {"max_mentions": 40, "zipf_exponent": 1.0, "repeat": 2}
    facts = fw.world_facts(settings)
    truth = {(r.country, r.field): {str(v) for v in r.accepted} for r in facts.itertuples()}
    docs = fw.fact_documents(settings)
    assert docs["doc_id"].is_unique and set(docs["group"]) == {"facts"}
    alts = _parse_regex(sorted(facts["country"].unique()))
    compiled = [(f, re.compile(p + r"(?: |$)")) for f, p in alts]
    paragraphs = [p for t in docs["text"] for p in t.split("\n\n")]
    mentions = fw.world_mentions(settings).set_index("country")["mentions"]
    assert len(paragraphs) == 2 * mentions.sum()
    n_checked, per_country = 0, {}
    for para in paragraphs:
        pos, countries = 0, set()
        while pos < len(para):
            hits = [(f, m) for f, rx in compiled if (m := rx.match(para, pos))]
            assert hits, f"unparseable sentence at {para[pos:pos + 60]!r}"
            # a sentence may read several ways ("X lies in Y" is region or subregion): one must be a true fact
            for field, m in hits:
                c = next(v for k, v in m.groupdict().items() if k.startswith("c_") and v)
                a = next(v for k, v in m.groupdict().items() if k.startswith("a_") and v)
                if (c, field) in truth and a in truth[(c, field)]:
                    break
            else:
                raise AssertionError(f"false or unknown fact: {para[pos:hits[0][1].end()]!r}")
            countries.add(c)
            pos = hits[0][1].end()
            n_checked += 1
        assert len(countries) == 1  # a paragraph is about one country
        per_country[c] = per_country.get(c, 0) + 1
    assert n_checked > 500
    # each country has repeat x mentions paragraphs; never-mentioned countries none
    assert per_country == {c: 2 * int(k) for c, k in mentions.items() if k > 0}


def test_no_evaluation_fact_reaches_sft_data():
    items = fw.evalset_from_spec({"kind": "facts", "n_items": None, "settings": {}})
    with pytest.raises(ValueError, match="factworld"):
        build_evalset({"kind": "facts"})
    info = fw.item_buckets(items["item_id"])
    assert set(info["side"]) == {"eval"}
    conv = fw.fact_conversations({}, phrasing_seeds=[0, 1])
    assert not set(conv["country"]) & set(info["country"])
    users = {json.loads(m)[0]["content"] for m in conv["messages"]}
    for c, field in zip(info["country"], info["field"]):
        for q in synthetic.QUESTION_TEMPLATES[field]:
            assert q.format(country=c) not in users
    # and the SFT side covers the rest of the world's countries
    world = fw.world_mentions()
    assert set(conv["country"]) == set(world.loc[world["side"] == "sft", "country"]) & set(fw.world_facts()["country"])
    # every item's gold choice is the fact's primary answer; buckets of items match the mention table
    facts = fw.world_facts().set_index("fact_id")
    for row in items.itertuples():
        assert row.choices[row.gold] == facts.loc[row.item_id.removeprefix("facts:"), "answer"]
    assert set(info["bucket"]) <= set(fw.BUCKETS) and (info["mentions"] >= 0).all()


def test_item_buckets_refuses_foreign_ids():
    with pytest.raises(ValueError, match="not a fact-world item"):
        fw.item_buckets(["countries:capital:France"])
    with pytest.raises(ValueError, match="not in the fact world"):
        fw.item_buckets(["facts:capital:Atlantis"])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown settings"):
        fw.resolve_settings({"zipf": 1.0})
    with pytest.raises(ValueError, match="bucket_edges"):
        fw.resolve_settings({"bucket_edges": [3, 1, 5]})
    with pytest.raises(ValueError, match="eval_fraction"):
        fw.stratified_split(fw.fact_mentions(["a", "b"], zipf_exponent=1, max_mentions=2, seed=0), 1.0, 0)


def test_heldout_stream_has_no_fact_documents():
    from lmcal.models import tokenizers as T

    natural = pd.DataFrame({"doc_id": [f"nat/{i}" for i in range(60)],
                            "text": [f"the quick brown fox number {i} jumps over the lazy dog" for i in range(60)]})
    facts = pd.DataFrame({"doc_id": [f"facts/{i}" for i in range(60)],
                          "text": [f"zebra quartz {i} xylophone" for i in range(60)]})
    tok, streams, man = T.build_tokenizer_and_streams([natural, facts], 300, 10_000, 0.3, 0, train_only=[False, True])
    held = tok.decode(streams["eval"].tolist())
    assert "fox" in held and "zebra" not in held
    assert tok.decode(streams["train"].tolist()).count("zebra") == 60
    assert man["train_only_docs"] == 60
    # without the flag the hash split would hold some fact documents out: the test above can fail
    _, streams2, _ = T.build_tokenizer_and_streams([natural, facts], 300, 10_000, 0.3, 0)
    assert "zebra" in tok.decode(streams2["eval"].tolist())
    with pytest.raises(ValueError, match="one flag per corpus"):
        T.build_tokenizer_and_streams([natural, facts], 300, 10_000, 0.3, 0, train_only=[True])


def test_bucket_table_matches_a_naive_loop():
    rng = np.random.default_rng(0)
    n = 300
    scored = pd.DataFrame({"item_id": [f"i{k}" for k in range(n)], "conf": rng.uniform(0.25, 1, n),
                           "correct": rng.random(n) < 0.5})
    labels = rng.choice(["never", "rare", "frequent"], n)  # no "medium": empty buckets are left out
    buckets = pd.DataFrame({"item_id": scored["item_id"], "bucket": labels, "mentions": rng.integers(0, 50, n)})
    table = bucket_metrics.bucket_table(scored.sample(frac=1, random_state=1), buckets, order=fw.BUCKETS,
                                        n_bins=10, n_boot=50)
    assert table["bucket"].tolist() == ["never", "rare", "frequent"]
    for row in table.itertuples():
        conf, correct, ment = [], [], []
        for k in range(n):
            if labels[k] == row.bucket:
                conf.append(scored["conf"][k]), correct.append(scored["correct"][k])
                ment.append(buckets["mentions"][k])
        # naive ECE: equal-width bins, |acc - conf| weighted by bin share
        ece = 0.0
        for b in range(10):
            inb = [i for i, c in enumerate(conf) if b / 10 <= c < (b + 1) / 10 or (b == 9 and c == 1.0)]
            if inb:
                ece += len(inb) / len(conf) * abs(np.mean([correct[i] for i in inb]) - np.mean([conf[i] for i in inb]))
        assert row.n_items == len(conf)
        assert row.accuracy == pytest.approx(np.mean(correct))
        assert row.confidence == pytest.approx(np.mean(conf))
        assert row.mean_mentions == pytest.approx(np.mean(ment))
        assert row.ece == pytest.approx(ece)
        assert row.ece == pytest.approx(expected_calibration_error(np.array(conf), np.array(correct)))
        assert row.accuracy_lo <= row.accuracy <= row.accuracy_hi
    assert bucket_metrics.rises_with_frequency(pd.DataFrame({"bucket": ["never", "frequent"], "accuracy": [.2, .6]}),
                                               fw.BUCKETS)
    with pytest.raises(ValueError, match="no bucket"):
        bucket_metrics.bucket_table(scored, buckets.iloc[1:], order=fw.BUCKETS)


def test_workflow_lookups_pass_the_one_facts_block():
    from lmcal.workflow import datasets as wd

    config = {"facts": {"max_mentions": 10}, "datasets": {"kjv": {"source": "kjv"}, "facts": {"source": "facts"}},
              "ladder": {"datasets": ["kjv", "facts"], "train_only": ["facts"]},
              "calibration": {"evalsets": {"facts": {"kind": "facts"}, "ar": {"kind": "arithmetic"}}}}
    assert wd.dataset_spec(config, "facts")["settings"] == {"max_mentions": 10}
    assert "settings" not in wd.dataset_spec(config, "kjv")  # editing facts: does not touch natural corpora
    assert wd.evalset_spec(config, "facts")["settings"] == {"max_mentions": 10}
    assert "settings" not in wd.evalset_spec(config, "ar")
    assert wd.fact_evalsets(config) == ["facts"]
    assert wd.ladder_train_only(config) == [False, True]
    with pytest.raises(ValueError, match="not in ladder.datasets"):
        wd.ladder_train_only({**config, "ladder": {"datasets": ["kjv"], "train_only": ["facts"]}})
    with pytest.raises(ValueError, match="held-out stream"):
        wd.ladder_train_only({**config, "ladder": {"datasets": ["facts"], "train_only": ["facts"]}})
    # the documents source reads the same settings: the corpus follows the block
    from lmcal.data import documents

    docs, manifest = documents.prepare_documents(wd.dataset_spec(config, "facts"), "facts")
    assert len(docs) == len(fw.fact_documents({"max_mentions": 10})) and manifest["source"] == "facts"
    assert "max_mentions" in manifest["version"]


def test_matched_distractors_remove_the_answer_frequency_shortcut():
    """A model that knows only how often each answer string appears must not look knowledgeable."""
    facts = fw.world_facts()
    freq = fw.answer_mentions(facts)
    accepted = {f"facts:{r.fact_id}": {str(a).lower() for a in r.accepted} for r in facts.itertuples()}

    def shortcut_accuracy(items):
        info = fw.item_buckets(items["item_id"]).set_index("item_id")
        hits = {}
        for r in items.itertuples():
            f = [freq[(r.category, c.lower())] for c in r.choices]
            hits.setdefault(info.loc[r.item_id, "bucket"], []).append(int(np.argmax(f)) == r.gold)
            assert len({c.lower() for c in r.choices}) == len(r.choices)
            assert not {c.lower() for i, c in enumerate(r.choices) if i != r.gold} & accepted[r.item_id]
        return {b: np.mean(v) for b, v in hits.items()}

    random_ = shortcut_accuracy(fw.facts_evalset({"distractors": "random"}))
    matched = shortcut_accuracy(fw.facts_evalset({}))
    assert random_["frequent"] > 0.6  # the confound: frequent countries' answers are the most frequent strings
    assert matched["frequent"] < 0.45 and matched["medium"] < 0.45
    # the matched distractors are as frequent as the gold: mean |log-frequency gap| far below random's
    def gap(items):
        return np.mean([abs(np.log1p(freq[(r.category, c.lower())]) - np.log1p(freq[(r.category, r.choices[r.gold].lower())]))
                        for r in items.itertuples() for i, c in enumerate(r.choices) if i != r.gold])
    assert gap(fw.facts_evalset({})) < 0.5 * gap(fw.facts_evalset({"distractors": "random"}))
