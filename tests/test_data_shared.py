"""The shared data helpers: one arithmetic table (lmcal.data.arithmetic) and one hash split (lmcal.data.splits),
and the callers that were merged onto them (calibration evaluation set, SFT data, emergence tasks, ladder split).
"""

from __future__ import annotations

import hashlib
import json
import operator

import numpy as np
import pytest

from lmcal.core.config import ConfigError, check_renamed_keys, validate_config
from lmcal.data import arithmetic, instructions, splits
from lmcal.data.evalsets import synthetic
from lmcal.emergence import tasks
from lmcal.models import tokenizers
from lmcal.workflow import sft as sft_workflow

PY = {"add": operator.add, "sub": operator.sub, "mul": operator.mul}


# ------------------------------------------------------------------------------------------------ arithmetic


def test_every_operator_agrees_with_python_and_its_symbol():
    assert set(arithmetic.OPS) == set(PY) and arithmetic.OP_NAMES == ("add", "sub", "mul")
    rng = np.random.default_rng(0)
    for name, op in arithmetic.OPS.items():
        for a, b in rng.integers(-999, 1000, size=(200, 2)).tolist():
            assert arithmetic.apply_op(name, a, b) == PY[name](a, b)
            assert eval(f"{a} {op.symbol} {b}") == PY[name](a, b)  # the printed symbol means the operation
    assert [arithmetic.OPS[o].word for o in ("add", "sub", "mul")] == ["plus", "minus", "times"]
    with pytest.raises(ValueError, match="op"):
        arithmetic.apply_op("div", 1, 2)


def test_check_ops_refuses_strings_unknown_names_and_empty_lists():
    assert arithmetic.check_ops(["mul", "add"]) == ("mul", "add")
    for bad in ("+-*", "add", [], ["add", "+"], ("div",)):
        with pytest.raises(ValueError, match="ops"):
            arithmetic.check_ops(bad)


def test_draw_problem_stays_in_range_and_keeps_subtraction_non_negative():
    rng = np.random.default_rng(3)
    drawn = [arithmetic.draw_problem(rng, ("add", "sub", "mul"), 1, 21) for _ in range(3000)]
    assert {op for op, _, _ in drawn} == {"add", "sub", "mul"}
    assert all(1 <= a <= 20 and 1 <= b <= 20 for _, a, b in drawn)
    assert all(a >= b for op, a, b in drawn if op == "sub")
    rng = np.random.default_rng(3)
    raw = [arithmetic.draw_problem(rng, ("sub",), 1, 21, non_negative=False) for _ in range(500)]
    assert any(a < b for _, a, b in raw)  # without the ordering negative answers occur


def test_digit_range_bounds():
    assert arithmetic.digit_range(1) == (0, 10) and arithmetic.digit_range(3) == (100, 1000)
    with pytest.raises(ValueError, match="n"):
        arithmetic.digit_range(0)


def test_the_three_callers_print_and_solve_problems_from_one_table():
    items = synthetic.arithmetic_evalset(n_items=60, seed=2, ops=["sub", "mul"])
    conv = instructions.arithmetic_conversations(60, seed=2, ops=["sub", "mul"])
    for q, ans in [(r.question, int(r.choices[r.gold])) for r in items.itertuples()] + [
        (m[0]["content"], int(m[1]["content"])) for m in conv["messages"].map(json.loads)
    ]:
        a, sym, b = q.removeprefix("What is ").removesuffix("?").split()
        name = {o.symbol: n for n, o in arithmetic.OPS.items()}[sym]
        assert name in ("sub", "mul") and ans == PY[name](int(a), int(b)) >= 0
    for op in ("add", "sub", "mul"):
        prompt, target, _ = tasks.format_problem(op, 2, "fewshot", (47, 18))
        assert prompt == f"47 {arithmetic.OPS[op].symbol} 18 -> " and int(target) == PY[op](47, 18)


def test_old_operator_spelling_fails_naming_the_new_key():
    old = {"calibration": {"evalsets": {"arith": {"kind": "arithmetic", "operations": ["+", "-"]}}}}
    with pytest.raises(ConfigError, match=r"calibration\.evalsets\.arith\.operations.*use calibration\.evalsets\.arith\.ops"):
        check_renamed_keys(old)
    old = {"sft": {"instruction_data": {"a": {"kind": "arithmetic", "operations": "+-*"}}}}
    with pytest.raises(ConfigError, match=r"sft\.instruction_data\.a\.ops"):
        check_renamed_keys(old)
    with pytest.raises(ConfigError, match=r"evalsets\.arith\.ops\[0\].*'\+' is not one of"):  # symbols are refused
        validate_config({"calibration": {"evalsets": {"arith": {"kind": "arithmetic", "ops": ["+"]}}}})


def test_sft_arithmetic_data_takes_the_evaluation_sets_operators():
    config = {"calibration": {"evalsets": {"ev": {"kind": "arithmetic", "max_operand": 20, "ops": ["mul"]}}},
              "sft": {"instruction_data": {"d": {"kind": "arithmetic", "evalset": "ev", "ops": ["add"]}}}}

    class W:
        data = "d"

    spec = sft_workflow.data_spec(config)(W)
    assert spec["ops"] == ["mul"] and spec["max_operand"] == 20
    conv = instructions.build_instruction_data(dict(spec, max_examples=30))
    assert conv["messages"].str.contains(r" \* ").all()


# ---------------------------------------------------------------------------------------------------- splits


KEYS = [f"key-{i}" for i in range(10_000)]


def test_split_is_deterministic_sized_and_a_partition():
    for fraction in (0.1, 0.5):
        mask = splits.held_out_mask(KEYS, fraction, seed=4)
        assert abs(mask.mean() - fraction) < 4 * np.sqrt(fraction * (1 - fraction) / len(KEYS))
        assert np.array_equal(mask, splits.held_out_mask(KEYS, fraction, seed=4))
        held = {k for k, m in zip(KEYS, mask) if m}
        rest = {k for k in KEYS if not splits.is_held_out(k, fraction, seed=4)}
        assert held.isdisjoint(rest) and held | rest == set(KEYS)
    order = np.random.default_rng(0).permutation(len(KEYS))
    assert np.array_equal(splits.held_out_mask([KEYS[i] for i in order], 0.3, 1), splits.held_out_mask(KEYS, 0.3, 1)[order])


def test_split_grows_monotonically_and_depends_on_the_seed():
    small, large = splits.held_out_mask(KEYS, 0.2, 0), splits.held_out_mask(KEYS, 0.4, 0)
    assert not (small & ~large).any()  # a larger fraction only moves keys into the held-out side
    assert (splits.held_out_mask(KEYS, 0.2, 1) != small).mean() > 0.2
    assert not splits.held_out_mask(KEYS, 0.0).any() and splits.held_out_mask(KEYS, 1.0).all()
    with pytest.raises(ValueError, match="fraction"):
        splits.is_held_out("a", 1.5)
    with pytest.raises(ValueError, match="digest"):
        splits.unit_hash("a", "md5")


def test_unit_hash_is_the_first_64_bits_of_the_digest():
    text = "seed:key"
    assert splits.unit_hash(text) == int(hashlib.sha256(text.encode()).hexdigest()[:16], 16) / 2**64
    assert splits.unit_hash(text, "blake2b") == int.from_bytes(
        hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


def test_merged_splits_keep_every_callers_former_assignment():
    """The three splits as they were written before the merge (SHA-256 read to 48 and 32 bits, BLAKE2b-64)."""
    def old_emergence(key, f):
        return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) / 16**12 < f

    def old_documents(ids, f, seed):
        return np.asarray([int(hashlib.sha256(f"{seed}:{d}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
                           for d in ids]) < f

    def old_country(c, f, seed):
        h = hashlib.blake2b(f"{seed}\x00{c}".encode(), digest_size=8).digest()
        return int.from_bytes(h, "big") / 2.0**64 < f

    keys = [tasks.problem_key(op, a, b) for op in ("add", "sub", "mul") for a in range(0, 100, 3) for b in range(100)]
    assert [tasks.is_eval_key(k, 0.2) for k in keys] == [old_emergence(k, 0.2) for k in keys]
    assert np.array_equal(tokenizers.split_documents(KEYS, 0.1, 3), old_documents(KEYS, 0.1, 3))
    countries = [f"Country {i}" for i in range(2000)]
    assert [synthetic.is_eval_country(c, 0.5, 1) for c in countries] == [old_country(c, 0.5, 1) for c in countries]
