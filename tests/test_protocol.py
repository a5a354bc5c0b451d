"""Document selection, prompt construction and spec §3 dataset preparation (lmcal.entropy.protocol, lmcal.data.corpora)."""

import json

import pandas as pd
import pytest
from lmcal.core import paths
from lmcal.data import corpora
from lmcal.entropy import protocol
from lmcal.entropy.protocol import build_prompts, shared_doc_ids
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

WORDS = ["<unk>", "<s>", "</s>", "<pad>", "Q:", "A:", "user:"] + [f"w{i}" for i in range(60)]
W0 = WORDS.index("w0")


def make_tokenizer(chat: bool = False):
    vocab = {w: i for i, w in enumerate(WORDS)}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    t.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>")
    if chat:
        tok.chat_template = ("{% for m in messages %}<s> {{ m['role'] }}: {{ m['content'] }} </s> {% endfor %}"
                             "{% if add_generation_prompt %}A: {% endif %}")
    return tok


def words(n: int, start: int = 0) -> str:
    return " ".join(f"w{(start + i) % 60}" for i in range(n))


def ids(n: int, start: int = 0) -> list[int]:
    return [W0 + (start + i) % 60 for i in range(n)]


@pytest.fixture
def docs():
    # lengths in tokens: 5, 12, 20, 9, 30, 15
    lengths = [5, 12, 20, 9, 30, 15]
    return pd.DataFrame({"doc_id": [f"d{i}" for i in range(6)], "text": [words(n, i) for i, n in enumerate(lengths)]})


def test_first_qualifying_documents_in_order(docs):
    tok = make_tokenizer()
    df = build_prompts(docs, tok, n=3, prompt_tokens=4, max_new_tokens=6, min_continuation=6, max_context=None)
    assert df["doc_id"].tolist() == ["d1", "d2", "d4"]  # >= 10 tokens, in dataset order
    first = df.iloc[0]
    assert list(first.prompt_ids) == [1] + ids(4, 1)  # BOS + first 4 human tokens
    assert list(first.continuation_ids) == ids(12, 1)[4:10]  # next max_new_tokens human tokens
    assert first.prompt_len == 5 and first.n_continuation == 6 and first.n_human_tokens == 12
    again = build_prompts(docs, tok, n=3, prompt_tokens=4, max_new_tokens=6, min_continuation=6, max_context=None)
    pd.testing.assert_frame_equal(df, again)


def test_continuation_is_capped_but_min_continuation_decides(docs):
    tok = make_tokenizer()
    df = build_prompts(docs, tok, n=2, prompt_tokens=4, max_new_tokens=100, min_continuation=10, max_context=None)
    assert df["doc_id"].tolist() == ["d2", "d4"]
    assert df["n_continuation"].tolist() == [16, 26]  # all remaining human tokens (< max_new_tokens)


def test_context_limits_fix_defect_6(docs):
    tok = make_tokenizer()
    kw = dict(n=1, prompt_tokens=4, max_new_tokens=6, min_continuation=6)
    # prompt 5 + 6 new = 11: needs max_context > 11 (strict, as in the reference) and model limit >= 11
    assert build_prompts(docs, tok, max_context=12, **kw)["doc_id"].tolist() == ["d1"]
    with pytest.raises(ValueError, match="only 0"):
        build_prompts(docs, tok, max_context=11, **kw)
    assert build_prompts(docs, tok, max_context=None, model_max_positions=11, **kw)["doc_id"].tolist() == ["d1"]
    with pytest.raises(ValueError, match="only 0"):
        build_prompts(docs, tok, max_context=None, model_max_positions=10, **kw)


def test_explicit_doc_ids_mode(docs):
    tok = make_tokenizer()
    kw = dict(prompt_tokens=4, max_new_tokens=6, min_continuation=6, max_context=None)
    df = build_prompts(docs, tok, n=99, doc_ids=["d4", "d1"], **kw)
    assert df["doc_id"].tolist() == ["d4", "d1"]
    with pytest.raises(ValueError, match="d0"):
        build_prompts(docs, tok, n=1, doc_ids=["d0"], **kw)  # too short
    with pytest.raises(ValueError, match="not in documents"):
        build_prompts(docs, tok, n=1, doc_ids=["nope"], **kw)


def test_shared_ids_qualify_for_every_model(docs):
    toks = [make_tokenizer(), make_tokenizer()]
    kw = dict(prompt_tokens=4, max_new_tokens=6, min_continuation=6, max_context=None)
    assert shared_doc_ids(docs, toks, n=2, model_max_positions=[100, 100], **kw) == ["d1", "d2"]
    # a model with room for only 10 positions excludes every document (prompt 5 + 6 > 10)
    with pytest.raises(ValueError, match="only 0"):
        shared_doc_ids(docs, toks, n=1, model_max_positions=[100, 10], **kw)


def test_context_base_and_chat_prompts():
    tok_base, tok_chat = make_tokenizer(), make_tokenizer(chat=True)
    docs = pd.DataFrame({"doc_id": ["a", "b"], "text": [words(20), words(20, 5)], "context": ["w50 w51", ""]})
    kw = dict(n=2, prompt_tokens=3, max_new_tokens=5, min_continuation=5, max_context=None)
    base = build_prompts(docs, tok_base, **kw)
    q, a = WORDS.index("Q:"), WORDS.index("A:")
    assert list(base.prompt_ids[0]) == [1, q, W0 + 50, W0 + 51, a] + ids(3)  # "Q: {context}\nA: " + human
    assert list(base.prompt_ids[1]) == [1] + ids(3, 5)  # no context: plain
    chat = build_prompts(docs, tok_chat, **kw)
    assert list(chat.prompt_ids[0]) == [1, WORDS.index("user:"), W0 + 50, W0 + 51, 2, a] + ids(3)
    assert chat["chat"].tolist() == [True, False]  # documents without context stay plain, as in the reference
    never = build_prompts(docs, tok_chat, chat_template="never", **kw)
    assert list(never.prompt_ids[0]) == list(base.prompt_ids[0])
    instructed = build_prompts(docs.drop(columns="context"), tok_base, instruction="w59", **kw)
    assert list(instructed.prompt_ids[1]) == [1, q, W0 + 59, a] + ids(3, 5)
    # continuations never depend on the prompt format
    assert [list(x) for x in base.continuation_ids] == [list(x) for x in chat.continuation_ids]


@pytest.mark.parametrize("kwargs, name", [({"n": 0}, "n"), ({"prompt_tokens": 0}, "prompt_tokens"),
                                          ({"max_new_tokens": 0}, "max_new_tokens"),
                                          ({"chat_template": "yes"}, "chat_template")])
def test_bad_arguments_are_named(docs, kwargs, name):
    args = dict(n=1, prompt_tokens=2, max_new_tokens=2, min_continuation=0, max_context=None) | kwargs
    with pytest.raises(ValueError, match=name):
        build_prompts(docs, make_tokenizer(), **args)


def test_too_few_documents_is_an_error(docs):
    with pytest.raises(ValueError, match="only 5 of 6"):
        build_prompts(docs, make_tokenizer(), n=6, prompt_tokens=2, max_new_tokens=2, min_continuation=4,
                      max_context=None)


# ------------------------------------------------------------------------------------- dataset preparation


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_wikitext103_min_chars_and_stable_ids(tmp_path):
    rows = [{"text": "x" * 250}, {"text": "short"}, {"text": " = Title = \n" + "y" * 300}]
    df = corpora.prepare_documents("wikitext103", corpora.load_rows(path=str(write_jsonl(tmp_path / "w.jsonl", rows))))
    assert df["doc_id"].tolist() == ["wikitext103/0", "wikitext103/2"]
    assert (df["context"] == "").all()


def test_writingprompts_detokenised_with_instruction(tmp_path):
    pytest.importorskip("nltk")
    rows = [{"prompt": "[ WP ] A dragon does n't like gold .",
             "story": "She said , \" I do n't know . \" ( Then she left . )"}]
    df = corpora.prepare_documents("writingprompts", corpora.load_rows(path=str(write_jsonl(tmp_path / "p.jsonl", rows))))
    assert df.loc[0, "context"] == "Write a story based on the following prompt: A dragon doesn't like gold."
    text = df.loc[0, "text"]  # Treebank detokenisation, as the reference (nltk) does it
    assert text.startswith("She said,") and "don't know." in text and text.endswith("(Then she left.)")
    assert " ," not in text and " n't" not in text


def test_code_contests_longest_ascii_solution_and_image_filter(tmp_path):
    rows = [
        {"name": "1_A. ok", "description": "Add two numbers.",
         "solutions": {"language": [1, 2, 3], "solution": ["short", "print('é' * 100000)", "  a = 1\nprint(a)  "]}},
        {"name": "2_B. pic", "description": "See <image> below.", "solutions": {"language": [3], "solution": ["x"]}},
        {"name": "3_C. none", "description": "No ASCII.", "solutions": {"language": [3], "solution": ["π"]}},
    ]
    df = corpora.prepare_documents("code_contests", corpora.load_rows(path=str(write_jsonl(tmp_path / "c.jsonl", rows))))
    assert df["doc_id"].tolist() == ["code_contests/0"]
    assert df.loc[0, "text"] == "```a = 1\nprint(a)```"  # longest ASCII one, stripped, fenced
    assert df.loc[0, "context"] == corpora.CODELLAMA_INSTRUCTION + "\nAdd two numbers."


def test_prepare_documents_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        corpora.prepare_documents("c4", [])


def test_output_key_and_context_limit():
    from types import SimpleNamespace

    assert paths.output_key("results/entropy/prompts/model~m/data~kjv.parquet") == ("kjv",)
    assert paths.output_key("r/samples/model~m/data~kjv/decode~t0.9.json") == ("kjv", "t0.9")
    with pytest.raises(ValueError, match="data~"):
        paths.output_key("results/other.parquet")
    assert protocol.context_limit(SimpleNamespace(max_position=2048, extra={"seq_len": 128})) == 128
    assert protocol.context_limit(SimpleNamespace(max_position=8192, extra={})) == 8192
    assert protocol.context_limit(SimpleNamespace(max_position=0, extra={})) is None
