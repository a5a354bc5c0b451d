"""Instruction data: response-only labels, chat/plain rendering, hub formats from local files, disjointness."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from lmcal.data import instructions as sft_data
from lmcal.data.evalsets import synthetic as evalsets
from lmcal.data.instructions import IGNORE_INDEX

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def word_tokenizer():
    """Word-level tokenizer: one token per word or punctuation run, so labels can be checked by hand."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<eos>", "<|im_start|>", "<|im_end|>", "Q", "A", ":", "?", "what", "is", "two", "plus",
             "four", "and", "three", "six", "user", "assistant", "system", "be", "brief", "#", "Instruction",
             "Response", "."]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    return fast


def _words(tok, ids):
    return [tok.convert_ids_to_tokens(i) for i in ids]


def _labelled(tok, ids, labels):
    return [tok.convert_ids_to_tokens(i) for i, y in zip(ids, labels) if y != IGNORE_INDEX]


def test_plain_template_labels_only_the_response(word_tokenizer):
    tok = word_tokenizer
    tpl = sft_data.PlainTemplate(user="Q: {content}\nA:", assistant=" {content}")
    msgs = [{"role": "user", "content": "what is two plus two?"}, {"role": "assistant", "content": "four"}]
    ids, labels = sft_data.encode_conversation(tok, msgs, template=tpl, use_chat_template=False)
    assert _words(tok, ids) == ["Q", ":", "what", "is", "two", "plus", "two", "?", "A", ":", "four", "<eos>"]
    assert labels == [IGNORE_INDEX] * 10 + [ids[10], ids[11]]


def test_default_plain_template_multi_turn(word_tokenizer):
    tok = word_tokenizer
    msgs = [{"role": "system", "content": "be brief."}, {"role": "user", "content": "two plus two?"},
            {"role": "assistant", "content": "four."}, {"role": "user", "content": "three plus three?"},
            {"role": "assistant", "content": "six."}]
    ids, labels = sft_data.encode_conversation(tok, msgs, use_chat_template=False)
    assert _labelled(tok, ids, labels) == ["four", ".", "<eos>", "six", ".", "<eos>"]
    words = _words(tok, ids)
    assert words[:3] == ["be", "brief", "."] and words.count("Instruction") == 2 and words.count("Response") == 2


def test_chat_template_labels_assistant_turns_with_end_marker(word_tokenizer):
    tok = word_tokenizer
    tok.chat_template = CHATML
    try:
        msgs = [{"role": "user", "content": "two plus two?"}, {"role": "assistant", "content": "four"},
                {"role": "user", "content": "three plus three?"}, {"role": "assistant", "content": "six"}]
        ids, labels = sft_data.encode_conversation(tok, msgs)  # auto: the tokenizer has a chat template
        assert _labelled(tok, ids, labels) == ["four", "<|im_end|>", "six", "<|im_end|>"]
        words = _words(tok, ids)
        # Every role marker and user word is context only.
        assert words.count("<|im_start|>") == 4 and words.count("<|im_end|>") == 4
        assert all(y == IGNORE_INDEX for w, y in zip(words, labels) if w in ("user", "assistant", "<|im_start|>"))
    finally:
        tok.chat_template = None


def test_truncation_and_no_label_examples_are_dropped(word_tokenizer):
    tok = word_tokenizer
    tpl = sft_data.PlainTemplate(user="Q: {content}\nA:", assistant=" {content}")
    convs = sft_data.qa_conversations(["what is two plus two?", "two?"], ["four", "four"], ["a", "b"])
    out = sft_data.encode_dataset(tok, convs, template=tpl, max_length=8, use_chat_template=False)
    assert len(out) == 1  # the first loses its answer to truncation; the second (6 tokens) keeps it
    assert _labelled(tok, out[0]["input_ids"], out[0]["labels"]) == ["four", "<eos>"]
    with pytest.raises(ValueError, match="no example"):
        sft_data.encode_dataset(tok, convs, template=tpl, max_length=3, use_chat_template=False)


def test_collate_right_pads():
    batch = sft_data.collate([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}],
                             pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]


def test_bad_conversations_are_refused(word_tokenizer):
    with pytest.raises(ValueError, match="no assistant"):
        sft_data.encode_conversation(word_tokenizer, [{"role": "user", "content": "two?"}])
    with pytest.raises(ValueError, match="role"):
        sft_data.check_conversation([{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}])
    with pytest.raises(ValueError, match="content"):
        sft_data.PlainTemplate(user="no placeholder")


# ------------------------------------------------------------------------------------ hub formats, locally


TULU = {"id": "t0", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        "source": "x"}
ALPACA = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}
ALPACA_NO_INPUT = {"instruction": "Say hi.", "input": "", "output": "hi"}
HERMES = {"conversations": [{"from": "system", "value": "Be terse."}, {"from": "human", "value": "2+2?"},
                            {"from": "gpt", "value": "4"}], "source": "y"}


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    "rows,expected",
    [
        ([TULU], [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]]),
        ([ALPACA, ALPACA_NO_INPUT], [
            [{"role": "user", "content": "Add the numbers.\n\n2 and 3"}, {"role": "assistant", "content": "5"}],
            [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}]]),
        ([HERMES], [[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"},
                     {"role": "assistant", "content": "4"}]]),
    ],
    ids=["tulu-messages", "alpaca", "openhermes-conversations"],
)
def test_hub_formats_load_from_local_jsonl(tmp_path, rows, expected):
    path = _write_jsonl(tmp_path / "data.jsonl", rows)
    df = sft_data.load_instruction_data(str(path))
    assert [json.loads(m) for m in df["messages"]] == expected


def test_hub_format_from_parquet_and_sampling(tmp_path):
    rows = [{"instruction": f"Echo {i}.", "input": "", "output": str(i)} for i in range(20)]
    pd.DataFrame(rows).to_parquet(tmp_path / "alpaca.parquet")
    df = sft_data.load_instruction_data(str(tmp_path / "alpaca.parquet"), max_examples=5, seed=1)
    answers = [json.loads(m)[1]["content"] for m in df["messages"]]
    assert len(answers) == 5 and answers == sorted(answers, key=int)  # a subset, kept in dataset order
    again = sft_data.load_instruction_data(str(tmp_path / "alpaca.parquet"), max_examples=5, seed=1)
    assert again.equals(df)


def test_detect_format_errors():
    assert sft_data.detect_format(["messages", "conversations"]) == "messages"
    with pytest.raises(ValueError, match="cannot tell"):
        sft_data.detect_format(["text"])


def test_build_instruction_data_hub_kind_reads_local_path(tmp_path):
    path = _write_jsonl(tmp_path / "h.jsonl", [HERMES, HERMES])
    df = sft_data.build_instruction_data({"kind": "hub", "path": str(path)})
    assert len(df) == 2 and json.loads(df["messages"][0])[-1] == {"role": "assistant", "content": "4"}


# ------------------------------------------------------------------------------------ offline task data


def test_country_sft_facts_are_disjoint_from_eval_facts():
    spec = {"n_items": 60, "eval_fraction": 0.5, "split_seed": 3, "seed": 0}
    items = evalsets.countries_evalset(n_items=60, eval_fraction=0.5, split_seed=3, seed=0)
    eval_countries = {i.split(":", 2)[2] for i in items["item_id"]}
    sft = sft_data.build_instruction_data({"kind": "countries", "eval_fraction": spec["eval_fraction"],
                                           "split_seed": spec["split_seed"], "phrasing_seeds": [0, 1]})
    assert len(sft) > 100
    assert eval_countries and not eval_countries & set(sft["country"])
    questions = {json.loads(m)[0]["content"] for m in sft["messages"]}
    assert not questions & set(items["question"])
    # Every answer is the fact's primary answer, the same string the evaluation offers as a choice.
    facts = evalsets.country_facts(0).set_index("question")["answer"]
    for m in sft["messages"][:50]:
        q, a = (t["content"] for t in json.loads(m))
        if q in facts.index:
            assert a == facts[q]


def test_arithmetic_sft_excludes_eval_questions_and_is_correct():
    items = evalsets.arithmetic_evalset(n_items=40, seed=0, max_operand=6)
    data = sft_data.build_instruction_data({"kind": "arithmetic", "max_examples": 30, "max_operand": 6,
                                            "seed": 1}, eval_items=items)
    qs = [json.loads(m)[0]["content"] for m in data["messages"]]
    assert len(set(qs)) == 30 and not set(qs) & set(items["question"])
    for m in data["messages"]:
        q, a = (t["content"] for t in json.loads(m))
        x, op, y = q.removeprefix("What is ").removesuffix("?").split()
        assert int(a) == {"+": int(x) + int(y), "-": int(x) - int(y), "*": int(x) * int(y)}[op] >= 0
    # 6*6 (+) + 21 (-, ordered) + 6*6 (*) = 93 distinct questions; what the evaluation holds is not available.
    left = 93 - len(set(items["question"]))
    assert len(sft_data.arithmetic_conversations(left, max_operand=6, exclude_questions=items["question"])) == left
    with pytest.raises(ValueError, match="more than the"):
        sft_data.arithmetic_conversations(left + 1, max_operand=6, exclude_questions=items["question"])
