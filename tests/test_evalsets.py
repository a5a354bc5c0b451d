"""Evaluation sets: real country facts, disjoint SFT/eval split, valid MCQ items, hub loaders on local files."""

from __future__ import annotations

import json
import operator

import numpy as np
import pandas as pd
import pytest
from lmcal.data import evalsets
from lmcal.data.evalsets import hub as hub_evalsets
from lmcal.data.evalsets import schema, synthetic


@pytest.fixture(scope="module")
def facts() -> pd.DataFrame:
    return synthetic.country_facts(seed=0, fields=synthetic.FACT_FIELDS)


def _fact(facts, country, field):
    row = facts[(facts["country"] == country) & (facts["field"] == field)]
    assert len(row) == 1, (country, field)
    return row.iloc[0]


def test_country_facts_hold_real_answers(facts):
    assert _fact(facts, "France", "capital")["answer"] == "Paris"
    assert _fact(facts, "Switzerland", "currency")["answer"] == "Swiss Franc"
    assert not ((facts["country"] == "Japan") & (facts["field"] == "currency")).any()  # "Japanese Yen"
    assert _fact(facts, "Peru", "region")["answer"] == "Americas"
    assert "Portuguese" in _fact(facts, "Brazil", "language")["accepted"]
    assert _fact(facts, "Madagascar", "demonym")["answer"] == "Malagasy"
    assert "France" in _fact(facts, "France", "capital")["question"]
    assert facts["fact_id"].is_unique
    assert set(facts["field"]) == set(synthetic.FACT_FIELDS) and len(facts) > 800


def test_country_facts_drop_give_away_answers_and_are_deterministic(facts):
    for row in facts.itertuples():
        assert row.answer == row.accepted[0]
        assert all(a.lower() not in row.country.lower() and row.country.lower() not in a.lower() for a in row.accepted)
    assert not ((facts["country"] == "Luxembourg") & (facts["field"] == "capital")).any()
    pd.testing.assert_frame_equal(facts, synthetic.country_facts(seed=0, fields=synthetic.FACT_FIELDS))
    other = synthetic.country_facts(seed=1, fields=synthetic.FACT_FIELDS)
    assert (other["answer"] == facts["answer"]).all() and (other["question"] != facts["question"]).any()
    with pytest.raises(ValueError, match="fields"):
        synthetic.country_facts(fields=("capital", "anthem"))


def test_split_is_disjoint_by_country_complete_and_stable(facts):
    sft, held = synthetic.split_facts(facts, eval_fraction=0.4, seed=3)
    assert set(sft["country"]).isdisjoint(held["country"])
    assert sorted(sft["fact_id"].tolist() + held["fact_id"].tolist()) == sorted(facts["fact_id"])
    share = held["country"].nunique() / facts["country"].nunique()
    assert 0.3 < share < 0.5
    # The assignment depends on the country alone: a subset of fields is split the same way.
    sub_sft, sub_held = synthetic.split_facts(facts[facts["field"] == "capital"], eval_fraction=0.4, seed=3)
    assert set(sub_held["country"]) <= set(held["country"]) and set(sub_sft["country"]) <= set(sft["country"])
    # A larger fraction only moves countries into evaluation; another seed gives another split.
    assert set(held["country"]) <= set(synthetic.split_facts(facts, 0.6, seed=3)[1]["country"])
    assert set(held["country"]) != set(synthetic.split_facts(facts, 0.4, seed=4)[1]["country"])
    assert len(synthetic.split_facts(facts, 0.0)[1]) == 0 and len(synthetic.split_facts(facts, 1.0)[0]) == 0
    with pytest.raises(ValueError, match="eval_fraction"):
        synthetic.split_facts(facts, 1.5)


def test_facts_to_mcq_gold_and_distractors(facts):
    items = synthetic.facts_to_mcq(facts, n_choices=4, seed=0)
    by_id = {f.fact_id: f for f in facts.itertuples()}
    answers = facts.groupby("field")["answer"].agg(set).to_dict()
    for row in items.itertuples():
        fact = by_id[row.item_id.removeprefix("countries:")]
        assert len(row.choices) == 4 and row.choices[row.gold] == fact.answer
        lowered = [c.lower() for c in row.choices]
        assert len(set(lowered)) == 4, row.choices  # distinct, gold never duplicated
        distractors = [c for k, c in enumerate(row.choices) if k != row.gold]
        assert not {d.lower() for d in distractors} & {a.lower() for a in fact.accepted}
        assert set(distractors) <= answers[fact.field]
    counts = np.bincount(items["gold"], minlength=4) / len(items)
    assert np.all(np.abs(counts - 0.25) < 0.05)  # gold position is uniform
    pd.testing.assert_frame_equal(items, synthetic.facts_to_mcq(facts, n_choices=4, seed=0))
    with pytest.raises(ValueError, match="n_choices"):
        synthetic.facts_to_mcq(facts[facts["field"] == "region"], n_choices=6)


def test_countries_evalset_uses_only_eval_countries_and_balances_fields(facts):
    items = synthetic.countries_evalset(n_items=100, seed=0, eval_fraction=0.5, split_seed=0)
    _, held = synthetic.split_facts(synthetic.country_facts(0), 0.5, 0)
    countries = {i.split(":", 2)[2] for i in items["item_id"]}
    assert countries <= set(held["country"])
    assert items["category"].value_counts().tolist() == [20] * 5
    assert list(items.columns) == list(schema.SCHEMA) and items["item_id"].is_unique
    pd.testing.assert_frame_equal(items, synthetic.countries_evalset(n_items=100, seed=0))
    assert not items["item_id"].equals(synthetic.countries_evalset(n_items=100, seed=1)["item_id"])
    with pytest.raises(ValueError, match="n_items"):
        synthetic.countries_evalset(n_items=10_000)


def test_arithmetic_evalset_gold_is_the_true_result():
    items = synthetic.arithmetic_evalset(n_items=300, n_choices=4, seed=5, max_operand=50)
    ops = {"+": operator.add, "-": operator.sub, "*": operator.mul}
    for row in items.itertuples():
        a, op, b = row.question.removeprefix("What is ").removesuffix("?").split()
        names = {"+": "addition", "-": "subtraction", "*": "multiplication"}
        assert int(row.choices[row.gold]) == ops[op](int(a), int(b)) and row.category == names[op]
        assert 1 <= int(a) <= 50 and 1 <= int(b) <= 50
        assert len(set(row.choices)) == 4 and all(int(c) >= 0 for c in row.choices)
    assert set(items["category"]) == {"addition", "subtraction", "multiplication"}
    pd.testing.assert_frame_equal(items, synthetic.arithmetic_evalset(n_items=300, n_choices=4, seed=5, max_operand=50))
    with pytest.raises(ValueError, match="ops"):
        synthetic.arithmetic_evalset(ops=("div",))
    with pytest.raises(ValueError, match="ops"):  # the old symbol spelling is refused, not read letter by letter
        synthetic.arithmetic_evalset(ops="+-*")
    only_mul = synthetic.arithmetic_evalset(n_items=20, ops=["mul"])
    assert set(only_mul["category"]) == {"multiplication"} and only_mul["question"].str.contains(r" \* ").all()


# ------------------------------------------------------------------------------ hub formats from local files


@pytest.fixture()
def mmlu_dir(tmp_path):
    test = pd.DataFrame(
        {
            "question": ["What is 2 + 2?", "Which planet is red?", "H2O is?"],
            "subject": ["elementary_mathematics", "astronomy", "high_school_chemistry"],
            "choices": [["3", "4", "5", "6"], ["Venus", "Mars", "Earth", "Moon"], ["salt", "acid", "water", "air"]],
            "answer": [1, 1, 2],
        }
    )
    (tmp_path / "all").mkdir()
    test.to_parquet(tmp_path / "all" / "test-00000-of-00001.parquet")
    test.iloc[:1].to_parquet(tmp_path / "all" / "validation-00000-of-00001.parquet")
    return tmp_path


def test_mmlu_from_local_parquet_dir_picks_split(mmlu_dir):
    items = evalsets.build_evalset({"kind": "mmlu", "path": str(mmlu_dir), "split": "test", "hub_config": "all"})
    assert len(items) == 3
    assert items.loc[1, "choices"][items.loc[1, "gold"]] == "Mars"
    assert items["category"].tolist()[1] == "astronomy" and (items["source"] == "mmlu").all()
    assert len(evalsets.build_evalset({"kind": "mmlu", "path": str(mmlu_dir), "split": "validation"})) == 1


def test_hellaswag_from_local_jsonl(tmp_path):
    rows = [
        {
            "ind": 24, "activity_label": "Roof shingle removal",
            "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
            "ctx": "A man is sitting on a roof. he",
            "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                        "is holding a rubik's cube.", "starts pulling up roofing on a roof."],
            "source_id": "activitynet~v_-JhWjGDPHMY", "split": "val", "split_type": "indomain", "label": "3",
        },
        {
            "ind": 92, "activity_label": "Making a cake",
            "ctx_a": "[header] How to bake a cake [title] Preheat the oven.", "ctx_b": "then",
            "ctx": "", "endings": ["a [step] b", "c", "d", "e"], "source_id": "wikihow~1", "split": "val",
            "split_type": "zeroshot", "label": "0",
        },
        {"ind": 7, "activity_label": "x", "ctx_a": "y", "ctx_b": "z", "ctx": "y z", "endings": ["1", "2", "3", "4"],
         "source_id": "s", "split": "test", "split_type": "indomain", "label": ""},
    ]
    path = tmp_path / "hellaswag_val.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = evalsets.build_evalset({"kind": "hellaswag", "path": str(path)})
    assert items["item_id"].tolist() == ["hellaswag:24", "hellaswag:92"]  # the unlabeled row is dropped
    assert items.loc[0, "question"] == "Roof shingle removal: A man is sitting on a roof. He"
    assert items.loc[0, "gold"] == 3 and items.loc[0, "choices"][3] == "starts pulling up roofing on a roof."
    assert items.loc[1, "question"] == "Making a cake: How to bake a cake. Preheat the oven. Then"
    assert items.loc[1, "choices"][0] == "a b"


def test_arc_from_local_parquet_with_letter_and_digit_keys(tmp_path):
    raw = pd.DataFrame(
        {
            "id": ["Mercury_1", "NYSEDREGENTS_2"],
            "question": ["Which is a mammal?", "What melts ice?"],
            "choices": [
                {"text": ["shark", "whale", "trout"], "label": ["A", "B", "C"]},
                {"text": ["cold", "heat", "dark", "wind", "rock"], "label": ["1", "2", "3", "4", "5"]},
            ],
            "answerKey": ["B", "2"],
        }
    )
    raw.to_parquet(tmp_path / "arc.parquet")
    items = evalsets.build_evalset({"kind": "arc", "path": str(tmp_path / "arc.parquet"), "name": "arc_easy"})
    assert [c[g] for c, g in zip(items["choices"], items["gold"])] == ["whale", "heat"]
    assert [len(c) for c in items["choices"]] == [3, 5]
    assert items["item_id"].tolist() == ["arc_easy:Mercury_1", "arc_easy:NYSEDREGENTS_2"]
    bad = raw.assign(answerKey=["Z", "2"])
    with pytest.raises(ValueError, match="answerKey"):
        hub_evalsets.arc_items(bad)


def test_hub_ids_go_to_load_dataset_with_pinned_revision(monkeypatch):
    calls = []

    class FakeDataset:
        def to_pandas(self):
            return pd.DataFrame({"question": [f"q{i}" for i in range(10)], "choices": [["a", "b"]] * 10,
                                 "answer": [i % 2 for i in range(10)]})

    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or FakeDataset())
    spec = {"kind": "mmlu", "hub_id": "cais/mmlu", "hub_config": "all", "split": "test", "revision": "abc123",
            "n_items": 4, "seed": 1}
    items = evalsets.build_evalset(spec)
    assert calls == [(("cais/mmlu", "all"), {"split": "test", "revision": "abc123"})]
    assert len(items) == 4
    # seeded sample, original order kept
    idx = [int(i.split(":")[1]) for i in items["item_id"]]
    assert idx == sorted(idx) and items.equals(evalsets.build_evalset(spec))


def test_bad_specs_and_items_raise():
    with pytest.raises(ValueError, match="kind"):
        evalsets.build_evalset({"kind": "trivia"})
    with pytest.raises(ValueError, match="path/hub_id"):
        evalsets.build_evalset({"kind": "mmlu"})
    bad = pd.DataFrame({"item_id": ["a"], "question": ["q"], "choices": [["x", "y"]], "gold": [2],
                        "source": ["s"], "category": [""]})
    with pytest.raises(ValueError, match="gold"):
        schema.check_items(bad)
