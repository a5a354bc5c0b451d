"""Synthetic task generators: correctness of answers, determinism, train/eval disjointness, MC options."""

import hashlib
import json
import re

import numpy as np
import pytest
from lmcal.emergence import tasks
from lmcal.emergence.tasks import STOP, TaskSpec

SPEC = TaskSpec(ops=["add", "sub", "mul"], digits=[1, 2, 3], eval_items=24, translit_lengths=[3, 5])


@pytest.fixture(scope="module")
def items():
    return tasks.make_eval_items(SPEC, seed=0)


@pytest.fixture(scope="module")
def train_docs():
    return tasks.make_training_documents(SPEC, n_docs=600, seed=0)


def _digest(df) -> str:
    return hashlib.sha256(df.to_json(orient="records").encode()).hexdigest()


def test_regeneration_is_bit_identical(items, train_docs):
    assert _digest(tasks.make_eval_items(SPEC, seed=0)) == _digest(items)
    assert _digest(tasks.make_training_documents(SPEC, n_docs=600, seed=0)) == _digest(train_docs)
    # and the seed matters
    assert _digest(tasks.make_eval_items(SPEC, seed=1)) != _digest(items)
    assert _digest(tasks.make_training_documents(SPEC, n_docs=600, seed=1)) != _digest(train_docs)


def test_components_and_counts(items):
    comps = set(items["component"])
    assert "add3-scratchpad" in comps and "mul3-scratchpad" not in comps and "map5-direct" in comps
    counts = items.groupby("component").size()
    assert counts["add3-fewshot"] == 24
    # 1-digit problems come from the ~20% held-out share of 100 problems: fewer, but all distinct
    assert 5 <= counts["add1-direct"] <= 24
    assert not items.duplicated(["component", "key"]).any()


def _operands(prompt: str, fmt: str) -> tuple[int, str, int]:
    line = prompt.splitlines()[-1] if fmt == "fewshot" else prompt.splitlines()[0]
    m = re.search(r"(-?\d+) (plus|minus|times|\+|-|\*) (-?\d+)", line)
    sym = {"plus": "+", "minus": "-", "times": "*"}.get(m.group(2), m.group(2))
    return int(m.group(1)), sym, int(m.group(3))


def test_arithmetic_answers_match_python(items):
    arith = items[items["task"] == "arithmetic"]
    for r in arith.itertuples():
        a, sym, b = _operands(r.prompt, r.format)
        assert r.answer == str(eval(f"{a}{sym}{b}")), r.item_id
        assert len(str(a)) == len(str(b)) == r.n_digits
        assert r.key == tasks.problem_key(r.op, a, b)


def test_fewshot_shots_are_solved_training_problems(items):
    for r in items[items["format"] == "fewshot"].itertuples():
        shots = r.prompt.split(STOP)[:-1]
        assert len(shots) == SPEC.n_shots
        for shot in shots:
            lhs, rhs = shot.split(" -> ")
            a, sym, b = _operands(lhs + " ->", "fewshot")
            assert rhs == str(eval(f"{a}{sym}{b}"))
            assert not tasks.is_eval_key(tasks.problem_key(r.op, a, b), SPEC.eval_fraction)


def test_scratchpad_steps_are_consistent(items):
    for r in items[items["format"] == "scratchpad"].itertuples():
        a, _, b = _operands(r.prompt, r.format)
        steps, final = r.target.split(";")
        assert final == r.answer == str(a + b)
        carry = 0
        for i, step in enumerate(steps.split(",")):
            lhs, s = step.split("=")
            parts = [int(p) for p in lhs.split("+")]
            assert parts[:2] == [a // 10**i % 10, b // 10**i % 10]
            assert sum(parts) == int(s) and (len(parts) == 3) == bool(carry)
            carry = int(s) // 10
    assert tasks.scratchpad_steps(57, 68) == "7+8=15,5+6+1=12;125"
    assert tasks.extract_answer("7+8=15,5+6+1=12;125\nQ: junk", "scratchpad") == "125"
    with pytest.raises(ValueError, match="scratchpad"):
        tasks.format_problem("mul", 2, "scratchpad", (12, 34))


def test_multiple_choice_options(items):
    mc = items[items["gold"] >= 0]
    assert set(mc["format"]) == {"direct"} and set(mc["task"]) == {"arithmetic"}
    golds = []
    for r in mc.itertuples():
        assert len(r.choices) == SPEC.n_choices == len(set(r.choices))
        assert r.choices[r.gold] == r.answer
        others = [int(c) for i, c in enumerate(r.choices) if i != r.gold]
        assert any(abs(o - int(r.answer)) == 1 for o in others)  # the off-by-one distractor
        golds.append(r.gold)
    counts = np.bincount(golds, minlength=SPEC.n_choices)
    assert (counts > len(golds) / SPEC.n_choices / 2).all()  # shuffled: gold is not stuck in one slot


def test_digit_swap_distractor():
    rng = np.random.default_rng(0)
    assert tasks.digit_swap(12, rng) == 21
    assert tasks.digit_swap(-345, np.random.default_rng(1)) in (-435, -354)
    assert tasks.digit_swap(7, rng) is None and tasks.digit_swap(555, rng) is None
    assert tasks.digit_swap(10, rng) is None  # "01" would have a leading zero


def test_transliteration_known_answers(items):
    assert tasks.transliterate("ship") == "ʃip"
    assert tasks.transliterate("thing") == "θiŋ"
    assert tasks.transliterate("jax") == "dʒɑks"
    assert tasks.transliterate("cq") == "kkw"
    for r in items[items["task"] == "transliterate"].itertuples():
        word = r.prompt.split("Transliterate ")[1].split("\n")[0]
        assert len(word) == r.n_digits and r.target == tasks.transliterate(word)
    with pytest.raises(ValueError, match="word"):
        tasks.transliterate("Ab")


def test_training_is_disjoint_from_evaluation(items, train_docs):
    train_keys = [k for keys in train_docs["keys"] for k in keys]
    assert len(train_keys) > 1000
    assert tasks.check_disjoint(train_keys, items["key"]) == set()
    assert not any(tasks.is_eval_key(k, SPEC.eval_fraction) for k in train_keys)
    # the hash split does not depend on the seed: other seeds' training data are disjoint too
    other = tasks.make_training_documents(SPEC, n_docs=300, seed=7)
    assert tasks.check_disjoint([k for ks in other["keys"] for k in ks], items["key"]) == set()
    # the check itself detects a leak
    leaked = items["key"].iloc[3]
    assert tasks.check_disjoint(train_keys + [leaked], items["key"]) == {leaked}


def test_training_text_is_well_formed(train_docs):
    for r in train_docs.head(200).itertuples():
        lines = r.text.split(STOP)[:-1]
        assert len(lines) >= 1 and r.text.endswith(STOP)
        if r.component.endswith("fewshot") and not r.component.startswith("map"):
            for line in lines:
                lhs, rhs = line.split(" -> ")
                a, sym, b = _operands(lhs + " ->", "fewshot")
                assert rhs == str(eval(f"{a}{sym}{b}"))
    assert set(train_docs["component"]) == {
        f"{t}/{o}/{n}/{f}" for t, o, n, f in SPEC.components()
    }  # every component is in the mixture
    held = tasks.make_training_documents(SPEC, n_docs=100, seed=0, held_out=True)
    keys = [k for ks in held["keys"] for k in ks]
    assert all(tasks.is_eval_key(k, SPEC.eval_fraction) for k in keys)


def test_task_charset_covers_every_text(items, train_docs):
    charset = set(tasks.task_charset())
    text = "".join(items["prompt"]) + "".join(items["target"]) + "".join(train_docs["text"])
    assert set(text) <= charset


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(ops=["div"]), "ops"),
        (dict(digits=[6]), "digits"),
        (dict(formats=["cot"]), "formats"),
        (dict(eval_fraction=1.0), "eval_fraction"),
        (dict(n_choices=1), "n_choices"),
    ],
)
def test_spec_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TaskSpec(**kwargs)


def test_spec_round_trips_through_json():
    spec = TaskSpec(**json.loads(json.dumps(SPEC.as_dict())))
    assert spec.components() == SPEC.components()
