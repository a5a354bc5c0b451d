"""Seeded synthetic tasks for the emergence study (spec "emergence and scaling-law fits" §4).

Arithmetic (+, −, × of n-digit numbers) in three formats — ``direct`` (BIG-bench ``arithmetic``: "What is 161
plus 390?"), ``fewshot`` (BIG-bench ``modified_arithmetic``: "a + b -> c" lines) and ``scratchpad`` (addition with
the carries written out) — plus multiple-choice versions of the direct items and a synthetic transliteration task
(a fixed Latin → IPA-like character map). Every answer line ends with ``STOP`` ("\\n"), so a generation is cut at
the first newline and P(exact match under sampling) = exp(log p(target) + log p(STOP | target)).

Train/eval disjointness is by construction: every problem has a key (operator and operands, or the word), and a
keyed hash sends a fixed fraction of all problems to the held-out partition, whatever the seed or format. The
training text is drawn only from the other partition (``is_eval_key`` and ``check_disjoint``).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from lmcal.data import splits
from lmcal.data.arithmetic import OPS, apply_op, digit_range, draw_operands

STOP = "\n"
FORMATS = ("direct", "fewshot", "scratchpad")
# Fixed transliteration map: digraphs first (matched greedily left to right), then single letters.
TRANSLIT_DIGRAPHS = {"sh": "ʃ", "ch": "tʃ", "th": "θ", "ng": "ŋ"}
TRANSLIT_LETTERS = dict(
    zip(
        "abcdefghijklmnopqrstuvwxyz",
        [
            "ɑ",
            "b",
            "k",
            "d",
            "ɛ",
            "f",
            "ɡ",
            "h",
            "i",
            "dʒ",
            "k",
            "l",
            "m",
            "n",
            "ɔ",
            "p",
            "kw",
            "ɹ",
            "s",
            "t",
            "u",
            "v",
            "w",
            "ks",
            "j",
            "z",
        ],
    )
)
TRANSLIT_ALPHABET = "aeioubdfghklmnprstvwzcjqxy"  # letters words are drawn from
ITEM_COLUMNS = [
    "item_id",
    "task",
    "op",
    "n_digits",
    "format",
    "prompt",
    "target",
    "answer",
    "key",
    "choices",
    "gold",
]


@dataclass
class TaskSpec:
    """Which task components exist and how large each evaluation set is.

    ``digits`` lists operand lengths n (1…5); ``formats`` the arithmetic formats (``scratchpad`` applies to
    ``add`` only); ``translit_lengths`` the word lengths of the transliteration task (empty list: no such task);
    ``eval_items`` items per component; ``eval_fraction`` the share of all problems held out for evaluation;
    ``n_shots`` the in-context examples of the few-shot format; ``n_choices`` the options of the MC version.
    """

    ops: list[str] = field(default_factory=lambda: ["add", "sub", "mul"])
    digits: list[int] = field(default_factory=lambda: [1, 2, 3])
    formats: list[str] = field(default_factory=lambda: ["direct", "fewshot", "scratchpad"])
    translit_lengths: list[int] = field(default_factory=lambda: [3, 5])
    eval_items: int = 64
    eval_fraction: float = 0.2
    n_shots: int = 2
    n_choices: int = 4

    def __post_init__(self) -> None:
        for op in self.ops:
            if op not in OPS:
                raise ValueError(f"ops: unknown operator {op!r}; expected one of {sorted(OPS)}")
        for n in self.digits:
            if not 1 <= int(n) <= 5:
                raise ValueError(f"digits: n must be in 1..5, got {n!r}")
        for f in self.formats:
            if f not in FORMATS:
                raise ValueError(f"formats: unknown format {f!r}; expected one of {FORMATS}")
        for n in self.translit_lengths:
            if not 1 <= int(n) <= 12:
                raise ValueError(f"translit_lengths: word length must be in 1..12, got {n!r}")
        if not 0 < self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in (0, 1), got {self.eval_fraction!r}")
        if self.eval_items < 1:
            raise ValueError(f"eval_items must be >= 1, got {self.eval_items!r}")
        if self.n_shots < 0:
            raise ValueError(f"n_shots must be >= 0, got {self.n_shots!r}")
        if self.n_choices < 2:
            raise ValueError(f"n_choices must be >= 2, got {self.n_choices!r}")

    def components(self) -> list[tuple[str, str, int, str]]:
        """(task, op, n, format) for every component, in a fixed order."""
        out = [
            ("arithmetic", op, int(n), f)
            for f in self.formats
            for op in self.ops
            for n in self.digits
            if f != "scratchpad" or op == "add"
        ]
        out += [("transliterate", "map", int(n), "direct") for n in self.translit_lengths]
        return out

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- problems and their keys


def problem_key(op: str, a: int | str, b: int | None = None) -> str:
    """Canonical key of a problem: the same problem has the same key in every format and split."""
    return f"translit:{a}" if op == "map" else f"{op}:{int(a)}:{int(b)}"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def is_eval_key(key: str, eval_fraction: float) -> bool:
    """Whether a problem belongs to the held-out partition (a fixed hash split, seed-independent)."""
    return splits.is_held_out(key, eval_fraction)


def component_rng(seed: int, split: str, *parts) -> np.random.Generator:
    """Independent generator per (seed, split, component), stable across Python/NumPy runs (no hash())."""
    tag = int(hashlib.sha256("/".join(map(str, (split, *parts))).encode()).hexdigest()[:16], 16)
    return np.random.default_rng(np.random.SeedSequence([int(seed), tag]))


def draw_batch(rng: np.random.Generator, op: str, n: int, count: int) -> list[tuple]:
    """``count`` problems drawn at once (vectorised; repeats and either partition possible)."""
    if op == "map":
        idx = rng.integers(0, len(TRANSLIT_ALPHABET), size=(count, n))
        return [("".join(TRANSLIT_ALPHABET[i] for i in row),) for row in idx]
    lo, hi = digit_range(n)
    return [(int(a), int(b)) for a, b in rng.integers(lo, hi, size=(count, 2))]


def draw_word(rng: np.random.Generator, length: int) -> str:
    return "".join(TRANSLIT_ALPHABET[i] for i in rng.integers(0, len(TRANSLIT_ALPHABET), size=length))


def transliterate(word: str) -> str:
    """Apply the fixed map: digraphs greedily left to right, otherwise letter by letter."""
    out, i = [], 0
    while i < len(word):
        if word[i : i + 2] in TRANSLIT_DIGRAPHS:
            out.append(TRANSLIT_DIGRAPHS[word[i : i + 2]])
            i += 2
        elif word[i] in TRANSLIT_LETTERS:
            out.append(TRANSLIT_LETTERS[word[i]])
            i += 1
        else:
            raise ValueError(f"word: cannot transliterate character {word[i]!r}")
    return "".join(out)


def draw_problems(
    rng: np.random.Generator, op: str, n: int, count: int, eval_fraction: float, held_out: bool
) -> list[tuple]:
    """``count`` distinct problems (a, b) or (word,) from one partition; fewer if the partition is smaller."""
    limit = count  # small partitions (1-digit problems) simply yield fewer problems
    seen, out, tries = set(), [], 0
    while len(out) < limit and tries < 50 * count + 1000:
        tries += 1
        prob = (draw_word(rng, n),) if op == "map" else draw_operands(rng, *digit_range(n))
        key = problem_key(op, *prob)
        if key in seen or is_eval_key(key, eval_fraction) != held_out:
            continue
        seen.add(key)
        out.append(prob)
    return out


# ---------------------------------------------------------------- formats


def scratchpad_steps(a: int, b: int) -> str:
    """Column addition from the least significant digit, carries shown: 57+68 -> "7+8=15,5+6+1=12;125"."""
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        x, y = int(da[i]) if i < len(da) else 0, int(db[i]) if i < len(db) else 0
        s = x + y + carry
        steps.append(f"{x}+{y}{'+1' if carry else ''}={s}")
        carry = s // 10
    return ",".join(steps) + f";{a + b}"


def extract_answer(text: str, fmt: str) -> str:
    """The final answer inside a generation: cut at STOP; for scratchpads, the part after the last ';'."""
    text = text.split(STOP, 1)[0]
    if fmt == "scratchpad":
        text = text.rsplit(";", 1)[-1]
    return text.strip()


def format_problem(op: str, n: int, fmt: str, prob: tuple) -> tuple[str, str, str]:
    """(query prompt, target, final answer) of one problem; the target excludes STOP."""
    if op == "map":
        answer = transliterate(prob[0])
        return f"Q: Transliterate {prob[0]}\nA: ", answer, answer
    a, b = prob
    answer = str(apply_op(op, a, b))
    word, sym = OPS[op].word, OPS[op].symbol
    if fmt == "direct":
        return f"Q: What is {a} {word} {b}?\nA: ", answer, answer
    if fmt == "fewshot":
        return f"{a} {sym} {b} -> ", answer, answer
    if fmt == "scratchpad":
        if op != "add":
            raise ValueError(f"fmt: scratchpad is defined for op='add' only, got op={op!r}")
        return f"Q: What is {a} plus {b}? Show carries.\nA: ", scratchpad_steps(a, b), answer
    raise ValueError(f"fmt: unknown format {fmt!r}")


def fewshot_prefix(rng: np.random.Generator, op: str, n: int, n_shots: int, eval_fraction: float) -> str:
    """In-context examples, drawn from the training partition only."""
    shots = draw_problems(rng, op, n, n_shots, eval_fraction, held_out=False)
    return "".join(p + t + STOP for p, t, _ in (format_problem(op, n, "fewshot", s) for s in shots))


# ---------------------------------------------------------------- multiple choice


def digit_swap(value: int, rng: np.random.Generator) -> int | None:
    """Swap two adjacent, different digits of |value|; None if no swap changes it."""
    s = str(abs(value))
    pos = [i for i in range(len(s) - 1) if s[i] != s[i + 1] and not (i == 0 and s[1] == "0")]
    if not pos:
        return None
    i = int(rng.choice(pos))
    swapped = s[:i] + s[i + 1] + s[i] + s[i + 2 :]
    return int(swapped) * (-1 if value < 0 else 1)


def mc_choices(answer: int, n: int, k: int, rng: np.random.Generator) -> tuple[list[str], int]:
    """k distinct options: gold, an off-by-one, a digit swap and random same-length numbers; shuffled.

    Returns (choices, index of the gold answer).
    """
    opts = [answer, answer + int(rng.choice([-1, 1]))]
    swapped = digit_swap(answer, rng)
    if swapped is not None and swapped not in opts:
        opts.append(swapped)
    width = max(len(str(abs(answer))), 1)
    lo, hi = digit_range(width)
    while len(opts) < k:
        cand = int(rng.integers(lo, hi)) * (-1 if answer < 0 else 1)
        if cand not in opts:
            opts.append(cand)
    opts = opts[:k]
    order = rng.permutation(len(opts))
    choices = [str(opts[i]) for i in order]
    return choices, int(np.flatnonzero(order == 0)[0])


# ---------------------------------------------------------------- evaluation items and training text


def make_eval_items(spec: TaskSpec, seed: int) -> pd.DataFrame:
    """All evaluation items of ``spec`` (columns ITEM_COLUMNS), a pure function of (spec, seed).

    ``n_digits`` is the operand length (arithmetic) or the word length (transliteration); ``component`` names
    the (op, n_digits, format) cell, e.g. "add2-fewshot" or "map5-direct".

    Direct arithmetic items carry MC ``choices`` (strings) and ``gold`` (index); other items have an empty list
    and gold = -1. Few-shot prompts start with ``n_shots`` solved examples from the training partition.
    """
    rows = []
    for task, op, n, fmt in spec.components():
        rng = component_rng(seed, "eval", task, op, n, fmt)
        shot_rng = component_rng(seed, "shots", task, op, n, fmt)
        for i, prob in enumerate(draw_problems(rng, op, n, spec.eval_items, spec.eval_fraction, True)):
            prompt, target, answer = format_problem(op, n, fmt, prob)
            if fmt == "fewshot":
                prompt = fewshot_prefix(shot_rng, op, n, spec.n_shots, spec.eval_fraction) + prompt
            choices, gold = [], -1
            if task == "arithmetic" and fmt == "direct":
                choices, gold = mc_choices(int(answer), n, spec.n_choices, rng)
            rows.append(
                dict(
                    item_id=f"{task}/{op}/{n}/{fmt}/{i}",
                    task=task,
                    op=op,
                    n_digits=n,
                    format=fmt,
                    prompt=prompt,
                    target=target,
                    answer=answer,
                    key=problem_key(op, *prob),
                    choices=choices,
                    gold=gold,
                )
            )
    df = pd.DataFrame(rows, columns=ITEM_COLUMNS)
    df.insert(1, "component", component_names(df))
    return df


def component_names(items: pd.DataFrame) -> pd.Series:
    """ "{op}{n_digits}-{format}" per row, e.g. "add2-fewshot"."""
    return items["op"] + items["n_digits"].astype(str) + "-" + items["format"]


def make_training_documents(
    spec: TaskSpec, n_docs: int, seed: int, lines_per_doc: int = 4, held_out: bool = False
) -> pd.DataFrame:
    """``n_docs`` training documents (columns doc_id, component, text, keys) from the training partition.

    ``held_out=True`` draws the same kind of documents from the evaluation partition instead: a held-out
    language-modelling stream (its loss is the ladder's held-out CE), never used for training.

    Components are mixed uniformly (document i uses component i mod #components, then the order is shuffled);
    each document holds ``lines_per_doc`` solved problems of one component, each ending in STOP, so the
    few-shot format is learnt as "continue the list". ``keys`` lists the problem keys for the hash check.
    """
    if n_docs < 1 or lines_per_doc < 1:
        raise ValueError(f"n_docs and lines_per_doc must be >= 1, got {n_docs}, {lines_per_doc}")
    comps = spec.components()
    split = "heldout" if held_out else "train"
    rngs = {c: component_rng(seed, split, *c) for c in comps}
    docs = []
    for i in range(n_docs):
        task, op, n, fmt = comps[i % len(comps)]
        rng = rngs[(task, op, n, fmt)]
        probs = draw_batch(rng, op, n, 4 * lines_per_doc)
        probs = [p for p in probs if is_eval_key(problem_key(op, *p), spec.eval_fraction) == held_out]
        probs = probs[:lines_per_doc] or draw_problems(rng, op, n, 1, spec.eval_fraction, held_out)
        texts = [format_problem(op, n, fmt, p) for p in probs]
        docs.append(
            dict(
                component=f"{task}/{op}/{n}/{fmt}",
                text="".join(p + t + STOP for p, t, _ in texts),
                keys=[problem_key(op, *p) for p in probs],
            )
        )
    order = component_rng(seed, f"{split}-order").permutation(len(docs))
    df = pd.DataFrame([docs[i] for i in order])
    df.insert(0, "doc_id", [f"{split}-{i}" for i in range(len(df))])
    return df


def check_disjoint(train_keys, eval_keys) -> set[str]:
    """Problem keys found in both sets, compared by SHA-256 (empty set = disjoint)."""
    train = {key_hash(k) for k in train_keys}
    return {k for k in eval_keys if key_hash(k) in train}


def task_charset() -> str:
    """Printable ASCII, STOP and the transliteration symbols: the character tokenizer's alphabet, sorted."""
    chars = {chr(c) for c in range(32, 127)} | {STOP}
    chars |= set("".join(TRANSLIT_LETTERS.values()) + "".join(TRANSLIT_DIGRAPHS.values()))
    return "".join(sorted(chars))
