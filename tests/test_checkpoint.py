"""The one training checkpoint (lmcal.models.checkpoint) and the named LR schedules, on tiny models (CPU).

A checkpoint resumes only under the exact settings and inputs it was written with: an interrupted run resumes
bit for bit, and a changed lr / token stream / tokenizer / label smoothing, a V/D pretraining change, or a
corrupt file all train from scratch, giving exactly what a clean run with the new settings gives.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pytest
import torch
from lmcal.core import io
from lmcal.models import checkpoint, llama, schedules, tokenizers

ARCH = {"hidden": 16, "layers": 1, "heads": 2}
KW = dict(steps=12, batch_size=4, seq_len=16, lr=1e-2, warmup_steps=2, seed=3, eval_every=3, progress=False)


def _stream(n=3000, vocab=50, seed=0):
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < 0.1, rng.integers(0, vocab, n), np.arange(n) % 7).astype(np.int32)


def _model(seed=1, vocab=50):
    return llama.build_llama(ARCH, vocab_size=vocab, seed=seed)


def _assert_same_weights(a, b):
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def _differs(a, b) -> bool:
    return any(not torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def _core(history: dict) -> dict:
    return {k: v for k, v in history.items() if k != "tokens_per_s"}


@pytest.fixture
def messages(caplog):
    caplog.set_level(logging.INFO, logger="lmcal.models.checkpoint")
    return lambda: " | ".join(r.getMessage() for r in caplog.records)


class Interrupt(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------- train_lm


def test_interrupted_train_lm_resumes_bit_for_bit(tmp_path, messages):
    ids = _stream()
    ref = _model()
    ref_hist = llama.train_lm(ref, ids, eval_ids=ids[:400], **KW)

    def stop_at_8(step, model):  # runs before the step-8 checkpoint: the step-4 one is the latest on disk
        if step == 8:
            raise Interrupt

    ckpt = tmp_path / "ckpt"
    with pytest.raises(Interrupt):
        llama.train_lm(_model(), ids, eval_ids=ids[:400], **KW, checkpoint_dir=ckpt, checkpoint_every=4,
                       on_checkpoint=stop_at_8)
    assert io.read_json(ckpt / checkpoint.SCALARS)["step"] == 4
    resumed, seen = _model(), []
    hist = llama.train_lm(resumed, ids, eval_ids=ids[:400], **KW, checkpoint_dir=ckpt, checkpoint_every=4,
                          on_checkpoint=lambda step, m: seen.append(step))
    assert seen == [8, 12], "steps 1-4 must come from the checkpoint"
    assert "resuming at step 4" in messages()
    _assert_same_weights(ref, resumed)
    assert _core(hist) == _core(ref_hist)
    assert sorted(p.name for p in ckpt.iterdir()) == [checkpoint.SCALARS, "state-00000012.safetensors"]


def test_changed_lr_after_a_finished_ladder_run_trains_from_scratch(tmp_path, messages):
    """The reported bug: a finished ladder-h16 checkpoint resumed under a new lr trained 0 steps."""
    from lmcal.ladder import study

    texts = ["the cat sat on the mat and the dog sat on the log " * 30]
    tok = tokenizers.train_bpe_tokenizer(texts, vocab_size=280)
    ids = tokenizers.tokenize_documents(tok, texts * 2)
    streams = {"train": ids, "eval": ids[:200]}
    kw = dict(name="h16", steps=6, batch_size=4, seq_len=16, warmup_steps=1, eval_tokens=128, seed=0)
    old, _, old_loss = study.train_ladder_model(tok, streams, ARCH, lr=1e-2, checkpoint_dir=tmp_path / "c", **kw)
    new, hist, new_loss = study.train_ladder_model(tok, streams, ARCH, lr=2e-2, checkpoint_dir=tmp_path / "c", **kw)
    clean, _, clean_loss = study.train_ladder_model(tok, streams, ARCH, lr=2e-2, **kw)
    assert "other settings (settings.lr)" in messages() and "training from scratch" in messages()
    assert len(hist["step"]) == 6 and _differs(new, old)
    _assert_same_weights(new, clean)
    assert new_loss == clean_loss != old_loss


def test_changed_token_stream_or_tokenizer_digest_starts_over(tmp_path, messages):
    ids, other = _stream(seed=0), _stream(seed=1)
    kw = dict(KW, steps=4, checkpoint_dir=tmp_path / "c", checkpoint_every=2)
    llama.train_lm(_model(), ids, **kw, fingerprint_inputs={"tokenizer": "aaa"})
    m = _model()
    llama.train_lm(m, other, **kw, fingerprint_inputs={"tokenizer": "aaa"})
    assert "data.train_ids" in messages()
    clean = _model()
    llama.train_lm(clean, other, **dict(KW, steps=4))
    _assert_same_weights(m, clean)
    seen = []
    llama.train_lm(_model(), other, **kw, fingerprint_inputs={"tokenizer": "bbb"},
                   on_checkpoint=lambda step, _: seen.append(step))
    assert "inputs.tokenizer" in messages() and seen == [2, 4]


def test_tokenizer_digest_is_stable_across_save_and_load_and_tells_tokenizers_apart(tmp_path):
    from transformers import AutoTokenizer

    a = tokenizers.train_bpe_tokenizer(["hello world, hello there " * 40], vocab_size=280)
    b = tokenizers.train_bpe_tokenizer(["x = 1\ny = 2\n" * 40], vocab_size=280)
    a.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    again(["hi", "hello there"], padding=True, truncation=True, max_length=4)  # toggles padding state
    assert checkpoint.tokenizer_digest(again) == checkpoint.tokenizer_digest(a)
    assert checkpoint.tokenizer_digest(b) != checkpoint.tokenizer_digest(a)


def test_vd_pretrain_with_a_new_lr_starts_over(tmp_path, messages):
    from lmcal.sft import vd

    text = [" ".join(f"{i} plus {j} is {i + j}." for i in range(10) for j in range(10))]
    tok = tokenizers.train_bpe_tokenizer(text, 280)
    ids = tokenizers.tokenize_documents(tok, text * 2)
    streams = {"train": ids, "eval": ids[:300]}
    train = {"steps": 4, "batch_size": 2, "seq_len": 16, "lr": 1e-2, "warmup_steps": 1, "eval_tokens": 128}
    arch = {"layers": 1, "heads": 2}
    old, _ = vd.pretrain(tok, streams, 16, arch, train, 0, tmp_path / "pretrain")
    new, _ = vd.pretrain(tok, streams, 16, arch, {**train, "lr": 3e-2}, 0, tmp_path / "pretrain")
    clean, _ = vd.pretrain(tok, streams, 16, arch, {**train, "lr": 3e-2}, 0)
    assert "settings.lr" in messages()
    _assert_same_weights(new, clean)
    assert _differs(new, old)
    # another seed in the same directory never resumes this one's state: it trains from scratch
    seed1, _ = vd.pretrain(tok, streams, 16, arch, train, 1, tmp_path / "pretrain")
    assert "settings.seed" in messages()
    _assert_same_weights(seed1, vd.pretrain(tok, streams, 16, arch, train, 1)[0])


# --------------------------------------------------------------------------------------------- train_sft


def _sft_model(seed=3):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=32,
                                        tie_word_embeddings=False))


def _examples(n=8, seed=0):
    from lmcal.data.instructions import IGNORE_INDEX

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = rng.integers(1, 40, size=int(rng.integers(6, 12))).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * 3 + ids[3:]})
    return out


def test_sft_checkpoint_with_other_label_smoothing_starts_over(tmp_path, messages):
    from lmcal.sft import train as sft

    examples = _examples()
    cfg = sft.SFTConfig(lr=1e-2, max_steps=4, batch_size=2, checkpoint_every=2, label_smoothing=0.0)
    old = _sft_model()
    sft.train_sft(old, examples, cfg, pad_id=0, checkpoint_dir=tmp_path / "c", progress=False)
    ls = dataclasses.replace(cfg, label_smoothing=0.1)
    new, steps_run = _sft_model(), []
    sft.train_sft(new, examples, ls, pad_id=0, checkpoint_dir=tmp_path / "c", progress=False,
                  on_step=lambda step, record: steps_run.append(step))
    assert "settings.label_smoothing" in messages() and steps_run == [1, 2, 3, 4]
    clean = _sft_model()
    sft.train_sft(clean, examples, ls, pad_id=0, progress=False)
    _assert_same_weights(new, clean)
    assert _differs(new, old)
    # other base weights (a different base model) also start over
    sft.train_sft(_sft_model(seed=4), examples, ls, pad_id=0, checkpoint_dir=tmp_path / "c", progress=False)
    assert "model.init_weights" in messages()


# ----------------------------------------------------------------------------------- files on disk


def test_corrupt_or_old_checkpoints_start_over_with_a_message(tmp_path, messages):
    ids = _stream()
    kw = dict(KW, steps=4, checkpoint_every=2)
    clean = _model()
    llama.train_lm(clean, ids, **kw)
    for damage, expect in [("truncate", "unreadable"), ("json", "unreadable"), ("old", "older format")]:
        ckpt = tmp_path / damage
        llama.train_lm(_model(), ids, **kw, checkpoint_dir=ckpt)
        state = next(ckpt.glob("state-*.safetensors"))
        if damage == "truncate":
            state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
        elif damage == "json":
            (ckpt / checkpoint.SCALARS).write_text('{"format": 1, "finger')
        else:  # the previous train_lm format: no fingerprint, tensors in checkpoint.safetensors
            io.write_json({"step": 4, "history": {}, "param_groups": []}, ckpt / checkpoint.SCALARS)
            state.rename(ckpt / "checkpoint.safetensors")
        m = _model()
        llama.train_lm(m, ids, **kw, checkpoint_dir=ckpt)
        assert expect in messages(), damage
        _assert_same_weights(m, clean)
        assert not (ckpt / "checkpoint.safetensors").exists()


def test_a_save_killed_before_its_json_leaves_the_previous_checkpoint(tmp_path):
    ids = _stream()
    ckpt = tmp_path / "c"
    llama.train_lm(_model(), ids, **dict(KW, steps=4), checkpoint_dir=ckpt)
    (ckpt / "state-00000008.safetensors").write_bytes(b"half a file")  # a later save died before its JSON
    seen = []
    llama.train_lm(_model(), ids, **dict(KW, steps=4), checkpoint_dir=ckpt, on_checkpoint=lambda s, m: seen.append(s))
    assert seen == [], "the step-4 checkpoint is complete and final"


def test_checkpointer_round_trips_tied_weights_optimizer_and_rng(tmp_path, messages):
    from transformers import LlamaConfig, LlamaForCausalLM

    def tied(seed):
        torch.manual_seed(seed)
        return LlamaForCausalLM(LlamaConfig(vocab_size=30, hidden_size=16, intermediate_size=32,
                                            num_hidden_layers=1, num_attention_heads=2, tie_word_embeddings=True))

    model = tied(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(input_ids=torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
    opt.step()
    saver = checkpoint.Checkpointer(tmp_path / "c", {"run": 1})
    torch.manual_seed(123)
    saver.save(model, opt, 1, {"loss": [1.5]})
    expected_draw = torch.rand(3)
    fresh = tied(1)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    assert checkpoint.Checkpointer(tmp_path / "c", {"run": 1}).restore(fresh, fresh_opt) == (1, {"loss": [1.5]})
    assert fresh.lm_head.weight is fresh.model.embed_tokens.weight
    _assert_same_weights(model, fresh)
    assert all(len(s) == 3 for s in fresh_opt.state.values()) and len(fresh_opt.state) == len(opt.state)
    assert torch.equal(torch.rand(3), expected_draw)
    # same fingerprint but tensors that do not fit the model: start over, files removed
    wider = LlamaForCausalLM(LlamaConfig(vocab_size=30, hidden_size=32, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2))
    wider_opt = torch.optim.AdamW(wider.parameters(), lr=1e-2)
    assert checkpoint.Checkpointer(tmp_path / "c", {"run": 1}).restore(wider, wider_opt) is None
    assert "does not match the model's tensors" in messages()
    assert not list((tmp_path / "c").iterdir())


def test_fingerprint_is_canonical_and_names_differences():
    a = {"b": [1, 2.5], "a": {"x": math.inf, "y": None}}
    assert checkpoint.fingerprint(a) == checkpoint.fingerprint({"a": {"y": None, "x": math.inf}, "b": (1, 2.5)})
    assert checkpoint.fingerprint(a) != checkpoint.fingerprint({**a, "b": [1, 2.25]})
    assert checkpoint.differing_keys({"s": {"lr": 1, "n": 2}, "k": 1}, {"s": {"lr": 2, "n": 2}, "j": 1}) == [
        "j", "k", "s.lr"]
    assert checkpoint.array_digest(np.arange(3, dtype=np.int32)) != checkpoint.array_digest(np.arange(3))


# --------------------------------------------------------------------------------------------- schedules


def test_named_schedules_known_values():
    cos = schedules.get_schedule("cosine")
    assert cos(0, 100, 1.0, 10) == pytest.approx(0.1) and cos(9, 100, 1.0, 10) == 1.0
    assert cos(10, 100, 1.0, 10) == 1.0 and cos(55, 100, 1.0, 10) == pytest.approx(0.55)  # halfway: (1 + 0.1) / 2
    assert cos(100, 100, 1.0, 10) == pytest.approx(0.1) and cos(150, 100, 2.0, 10) == pytest.approx(0.2)
    lin = schedules.get_schedule("linear")
    assert [lin(s, 8, 1.0, 2) for s in range(8)] == pytest.approx([0.5, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    assert lin(8, 8, 1.0, 2) == 0.0 and lin(0, 5, 3.0, 0) == pytest.approx(3.0)
    with pytest.raises(ValueError, match=r"unknown 'constant'.*\['cosine', 'linear'\]"):
        schedules.get_schedule("constant")
    with pytest.raises(ValueError, match="known schedules"):
        llama.train_lm(_model(), _stream(), steps=1, batch_size=1, seq_len=8, lr=1e-3, schedule="step")


def test_schedule_name_is_fingerprinted(tmp_path, messages):
    ids = _stream()
    kw = dict(KW, steps=4, checkpoint_dir=tmp_path / "c", checkpoint_every=2)
    llama.train_lm(_model(), ids, **kw)
    m = _model()
    h = llama.train_lm(m, ids, **kw, schedule="linear")
    assert "settings.schedule" in messages() and h["lr"] == pytest.approx([5e-3, 1e-2, 1e-2, 5e-3])
