"""Seeded arithmetic problems: the one operator table and operand drawing behind every arithmetic task.

Three callers build on it: the calibration evaluation set (``lmcal.data.evalsets.synthetic.arithmetic_evalset``),
the SFT instruction data (``lmcal.data.instructions.arithmetic_conversations``) and the emergence tasks
(``lmcal.emergence.tasks``). Operators are named ``add``/``sub``/``mul`` everywhere (config key ``ops``); each
carries the symbol and the word its question formats print.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Op:
    name: str  # config spelling
    symbol: str  # "What is 3 + 4?", "3 + 4 -> 7"
    word: str  # "What is 3 plus 4?"
    noun: str  # an evaluation item's category
    apply: Callable[[int, int], int]


OPS: dict[str, Op] = {
    "add": Op("add", "+", "plus", "addition", operator.add),
    "sub": Op("sub", "-", "minus", "subtraction", operator.sub),
    "mul": Op("mul", "*", "times", "multiplication", operator.mul),
}
OP_NAMES = tuple(OPS)


def check_ops(ops: Sequence[str], what: str = "ops") -> tuple[str, ...]:
    """``ops`` as a tuple of operator names; ValueError naming ``what`` unless it is a non-empty subset of OPS.

    A bare string is refused (``"add"`` would otherwise read as the letters a, d, d; ``"+-*"`` is the old spelling).
    """
    if isinstance(ops, str) or not len(ops) or any(op not in OPS for op in ops):
        raise ValueError(f"{what}: expected a non-empty list of operator names from {list(OPS)}, got {ops!r}")
    return tuple(ops)


def apply_op(op: str, a: int, b: int) -> int:
    if op not in OPS:
        raise ValueError(f"op: unknown operator {op!r}; expected one of {list(OPS)}")
    return OPS[op].apply(a, b)


def digit_range(n: int) -> tuple[int, int]:
    """[lo, hi) of n-digit numbers (n = 1 includes 0)."""
    if n < 1:
        raise ValueError(f"n: expected a digit count >= 1, got {n}")
    return (0 if n == 1 else 10 ** (n - 1)), 10**n


def draw_operands(rng: np.random.Generator, lo: int, hi: int) -> tuple[int, int]:
    """Two independent uniform integers in [lo, hi) (one call; the same stream as two scalar draws)."""
    a, b = rng.integers(lo, hi, size=2)
    return int(a), int(b)


def draw_problem(rng: np.random.Generator, ops: Sequence[str], lo: int, hi: int,
                 non_negative: bool = True) -> tuple[str, int, int]:
    """(op, a, b): a uniform operator of ``ops`` then two operands in [lo, hi).

    ``non_negative`` orders subtraction's operands so the answer is never negative (the evaluation set and the
    SFT data draw their questions this way, so both come from one distribution).
    """
    op = ops[int(rng.integers(len(ops)))]
    a, b = draw_operands(rng, lo, hi)
    if non_negative and op == "sub" and b > a:
        a, b = b, a
    return op, a, b


def symbol_question(op: str, a: int, b: int) -> str:
    """ "What is a + b?" (the calibration evaluation set's and the SFT data's question)."""
    return f"What is {a} {OPS[op].symbol} {b}?"
