"""Hub corpora of the entropy-calibration protocol (spec §3): WikiText-103, WritingPrompts and
CodeContests rows prepared into documents exactly as the reference does (with its known defects fixed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

WRITINGPROMPTS_INSTRUCTION = "Write a story based on the following prompt: {prompt}"
CODELLAMA_INSTRUCTION = (
    "Write code to solve the following coding problem that obeys the constraints and passes the example test "
    "cases. The output code needs to read from and write to standard IO. Please wrap your code answer using ```:"
)
IMAGE_TAGS = ("<image>", "[Image]")

# Spec §3 sources. Revisions are pinned per run in config (entropy paper config); None = resolve at download
# and record the resolved commit in the dataset manifest.
HUB_SOURCES: dict[str, dict[str, Any]] = {
    "wikitext103": {"hub_id": "iohadrubin/wikitext-103-raw-v1", "revision": None, "splits": ["train"],
                    "min_chars": 200},
    "writingprompts": {"hub_id": "euclaise/writingprompts", "revision": None, "splits": ["train"]},
    "code_contests": {"hub_id": "deepmind/code_contests", "revision": None, "splits": ["train", "valid", "test"]},
}


# -------------------------------------------------------------------------------------- dataset preparation


def _detokenize(text: str) -> str:
    from nltk.tokenize.treebank import (
        TreebankWordDetokenizer,  # imported lazily: only WritingPrompts needs it
    )

    return TreebankWordDetokenizer().detokenize(text.split())


def prepare_wikitext103(rows: Iterable[dict[str, Any]], min_chars: int = 200) -> pd.DataFrame:
    """`iohadrubin/wikitext-103-raw-v1` rows (document level, column ``text``) -> documents >= min_chars."""
    recs = [{"doc_id": f"wikitext103/{i}", "text": r["text"], "context": "", "source": "wikitext103"}
            for i, r in enumerate(rows) if len(r["text"]) >= min_chars]
    return pd.DataFrame.from_records(recs, columns=["doc_id", "text", "context", "source"])


WP_TAG = re.compile(r"^.*?\[\s*W\s*P\s*\]\s*")


def writingprompts_instruction(prompt: str) -> str:
    """Detokenised prompt without its ``[ WP ]`` tag, inside the reference instruction template.

    The reference looks for ``"[ WP ]"`` *after* detokenising, when it has already become ``"[WP]"``, so its
    prompts keep the tag; the evident intent (drop everything up to the tag) is implemented here.
    """
    return WRITINGPROMPTS_INSTRUCTION.format(prompt=WP_TAG.sub("", _detokenize(prompt), count=1).strip())


def prepare_writingprompts(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """`euclaise/writingprompts` rows (``prompt``, ``story``) -> Treebank-detokenised story + instruction."""
    recs = [{"doc_id": f"writingprompts/{i}", "text": _detokenize(r["story"]),
             "context": writingprompts_instruction(r["prompt"]), "source": "writingprompts"}
            for i, r in enumerate(rows)]
    return pd.DataFrame.from_records(recs, columns=["doc_id", "text", "context", "source"])


def longest_ascii_solution(solutions: dict[str, Sequence[Any]]) -> str | None:
    """Longest ASCII solution in any language (first on ties), or None."""
    ascii_solutions = [s for s in solutions.get("solution", []) if s.isascii()]
    if not ascii_solutions:
        return None
    return ascii_solutions[int(np.argmax([len(s) for s in ascii_solutions]))]


def prepare_code_contests(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """`deepmind/code_contests` rows (train+valid+test in that order) -> fenced longest solution + instruction.

    Problems whose description contains an image tag, or with no ASCII solution, are skipped.
    """
    recs = []
    for i, r in enumerate(rows):
        solution = longest_ascii_solution(r["solutions"])
        if solution is None or any(tag in r["description"] for tag in IMAGE_TAGS):
            continue
        recs.append({"doc_id": f"code_contests/{i}", "text": f"```{solution.strip()}```",
                     "context": f"{CODELLAMA_INSTRUCTION}\n{r['description']}", "source": "code_contests",
                     "name": r.get("name", "")})
    return pd.DataFrame.from_records(recs, columns=["doc_id", "text", "context", "source", "name"])


PREPARERS = {"wikitext103": prepare_wikitext103, "writingprompts": prepare_writingprompts,
             "code_contests": prepare_code_contests}


def load_rows(hub_id: str | None = None, revision: str | None = None, splits: Sequence[str] = ("train",),
              name: str | None = None, path: str | Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    """Rows of a hub dataset (pinned ``revision``), split by split in the given order, or of local files
    (``path``: parquet/jsonl in the hub's schema, read with the same `datasets` machinery)."""
    import datasets

    if path is not None:
        files = [path] if isinstance(path, str) else list(path)
        builder = "parquet" if str(files[0]).endswith(".parquet") else "json"
        yield from datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")
        return
    if not hub_id:
        raise ValueError("load_rows: give hub_id or path")
    for split in splits:
        yield from datasets.load_dataset(hub_id, name, split=split, revision=revision)


def prepare_documents(kind: str, rows: Iterable[dict[str, Any]], **kwargs) -> pd.DataFrame:
    """Dispatch to the spec §3 preparation of ``kind`` (wikitext103 | writingprompts | code_contests)."""
    if kind not in PREPARERS:
        raise ValueError(f"kind must be one of {sorted(PREPARERS)}, got {kind!r}")
    return PREPARERS[kind](rows, **kwargs)
