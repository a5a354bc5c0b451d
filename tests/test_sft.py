"""SFT loss, transforms, schedule, Δ*, and exact resume of a killed training run (tiny random Llama, CPU)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lmcal.core import io
from lmcal.data.instructions import IGNORE_INDEX, collate
from lmcal.models import checkpoint
from lmcal.sft import train as sft

V = 97


def tiny_llama(seed: int = 0, vocab: int = V):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


def random_examples(n: int, seed: int = 0, vocab: int = V) -> list[dict]:
    """Sequences of 6-14 tokens whose first 3-8 tokens are a prompt (label IGNORE_INDEX)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(6, 15))
        ids = rng.integers(1, vocab, size=length).tolist()
        k = int(rng.integers(3, min(9, length - 1)))
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * k + ids[k:]})
    return out


@pytest.fixture(scope="module")
def batch():
    return collate(random_examples(5, seed=1), pad_id=0)


def reference_loss(model, batch, beta, temperature=1.0, softcap=None):
    """Mean label-smoothed CE over response tokens, straight from F.cross_entropy on the model's logits."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    logits = logits / temperature
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1),
                           ignore_index=IGNORE_INDEX, label_smoothing=beta)


@pytest.mark.parametrize("impl", ["torch", "chunked"])
@pytest.mark.parametrize("beta", [0.0, 0.1, 0.3])
def test_sft_loss_equals_torch_label_smoothed_ce(batch, impl, beta):
    model = tiny_llama()
    cfg = sft.SFTConfig(label_smoothing=beta, loss_impl=impl)
    loss_sum, n = sft.response_loss(model, batch, cfg)
    assert n == int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    ref = reference_loss(model, batch, beta)
    torch.testing.assert_close(loss_sum / n, ref, rtol=1e-5, atol=1e-6)
    # Gradients agree too (the chunked path has its own backward).
    g = torch.autograd.grad(loss_sum / n, model.model.embed_tokens.weight)[0]
    g_ref = torch.autograd.grad(reference_loss(model, batch, beta), model.model.embed_tokens.weight)[0]
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-6)


def test_label_smoothing_matches_hand_computed_target_distribution(batch):
    """-(sum_j q_j log p_j) with q = (1-β) onehot + β/V, computed without F.cross_entropy."""
    model, beta = tiny_llama(), 0.2
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE_INDEX
    logp = torch.log_softmax(logits[keep].double(), -1)
    q = torch.full_like(logp, beta / V)
    q[torch.arange(len(q)), labels[keep]] += 1 - beta
    manual = -(q * logp).sum(1).mean()
    with torch.no_grad():
        loss_sum, n = sft.response_loss(model, batch, sft.SFTConfig(label_smoothing=beta))
    assert abs(float(loss_sum / n) - float(manual)) < 1e-5


@pytest.mark.parametrize("impl", ["torch", "chunked"])
def test_temperature_softcap_and_loss_multiplier(batch, impl):
    model = tiny_llama()
    T, cap, beta = 0.5, 3.0, 0.1
    cfg = sft.SFTConfig(label_smoothing=beta, temperature=T, softcap=cap, loss_impl=impl)
    loss_sum, n = sft.response_loss(model, batch, cfg)
    torch.testing.assert_close(loss_sum / n, reference_loss(model, batch, beta, T, cap), rtol=1e-5, atol=1e-6)
    with_mult, _ = sft.response_loss(model, batch, sft.SFTConfig(label_smoothing=beta, temperature=T, softcap=cap,
                                                                 loss_impl=impl, temperature_loss_multiplier=True))
    torch.testing.assert_close(with_mult, loss_sum * T)


def test_transform_logits_known_values():
    z = torch.tensor([-100.0, -1.0, 0.0, 2.0, 100.0])
    torch.testing.assert_close(sft.transform_logits(z, temperature=0.5), 2 * z)
    capped = sft.transform_logits(z, softcap=10.0)
    torch.testing.assert_close(capped, 10 * torch.tanh(z / 10))
    assert capped.abs().max() <= 10 and abs(float(capped[3]) - 2.0) < 0.03  # bounded; near-identity for |z| << s
    torch.testing.assert_close(sft.transform_logits(z, 2.0, 10.0), 10 * torch.tanh(z / 2 / 10))  # T first
    with pytest.raises(ValueError, match="temperature"):
        sft.transform_logits(z, temperature=0.0)
    with pytest.raises(ValueError, match="softcap"):
        sft.transform_logits(z, softcap=-1.0)


@pytest.mark.parametrize("vocab,expected", [(32000, 12.57), (128256, 13.96), (151936, 14.13), (256000, 14.65)])
def test_optimal_logit_gap_values(vocab, expected):
    assert round(sft.optimal_logit_gap(0.1, vocab), 2) == expected
    drop = sft.optimal_logit_gap(0.1, vocab) - sft.optimal_logit_gap(0.2, vocab)
    assert 0.75 < drop < 0.85  # "each about 0.8 lower" (ln(9/4) = 0.81 in the large-V limit)
    assert sft.optimal_logit_gap(0.0, vocab) == math.inf


def test_optimal_logit_gap_is_the_ls_minimiser():
    """At gap Δ* between target and all others, the LS loss is stationary (and minimal) in the gap."""
    beta, vocab = 0.1, 50
    d = sft.optimal_logit_gap(beta, vocab)

    def loss(gap):
        z = torch.zeros(1, vocab, dtype=torch.float64)
        z[0, 0] = gap
        return float(F.cross_entropy(z, torch.tensor([0]), label_smoothing=beta))

    assert loss(d) < loss(d - 0.05) and loss(d) < loss(d + 0.05)
    with pytest.raises(ValueError):
        sft.optimal_logit_gap(1.5, vocab)


def test_logit_gap_stats_on_known_logits():
    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = None
            self.unused = torch.nn.Parameter(torch.zeros(1))  # gives the module a device

        def forward(self, input_ids, attention_mask):
            z = torch.zeros(1, 3, 4)
            z[0, 0] = torch.tensor([5.0, 1.0, 2.0, 0.0])  # predicts position 1 (target 0)
            return type("Out", (), {"logits": z})()

    batch = {"input_ids": torch.tensor([[9, 0, 9]]), "attention_mask": torch.ones(1, 3, dtype=torch.long),
             "labels": torch.tensor([[IGNORE_INDEX, 0, IGNORE_INDEX]])}
    stats = sft.logit_gap_stats(Fixed(), batch)
    assert stats == {"gap_mean": 4.0, "gap_max": 3.0, "n_tokens": 1}


def test_logit_gap_stats_do_not_depend_on_how_many_rows_run_at_once():
    model = tiny_llama(seed=3)
    batch = collate(random_examples(7, seed=4), pad_id=0)
    whole = sft.logit_gap_stats(model, batch, rows=7)
    for rows in (1, 3):
        part = sft.logit_gap_stats(model, batch, rows=rows)
        assert part["n_tokens"] == whole["n_tokens"] > 7
        assert part["gap_mean"] == pytest.approx(whole["gap_mean"], abs=1e-5)
        assert part["gap_max"] == pytest.approx(whole["gap_max"], abs=1e-5)


def test_lr_schedule_and_step_count():
    cfg = sft.SFTConfig(epochs=2, batch_size=4, grad_accum=2, warmup_ratio=0.25)
    assert sft.total_steps(17, cfg) == 6  # ceil(17 / 8) = 3 steps per epoch
    assert sft.total_steps(17, sft.SFTConfig(max_steps=11)) == 11
    model = tiny_llama(seed=2)  # the lrs train_sft applies: the "linear" schedule, warmup ceil(0.25 * 8) = 2
    hist = sft.train_sft(model, random_examples(4, seed=9), sft.SFTConfig(lr=0.6, max_steps=8, batch_size=4,
                                                                        warmup_ratio=0.25), pad_id=0, progress=False)
    assert hist["lr"] == pytest.approx([0.3, 0.6, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    with pytest.raises(ValueError, match="known schedules"):
        sft.SFTConfig(lr_schedule="constant")


def test_step_examples_cover_each_epoch_once():
    n, per = 23, 5
    steps_per_epoch = math.ceil(n / per)
    for epoch in range(2):
        idx = np.concatenate([sft.step_examples(epoch * steps_per_epoch + j, n, per, seed=3)
                              for j in range(steps_per_epoch)])
        assert sorted(idx.tolist()) == list(range(n))
    first = sft.step_examples(0, n, per, 3)
    assert not np.array_equal(first, sft.step_examples(steps_per_epoch, n, per, 3))  # reshuffled each epoch


def test_mean_reduction_is_token_weighted_across_accumulation():
    """grad_accum=2 × batch 3 takes the same step as one batch of 6 (mean over all response tokens)."""
    examples = random_examples(6, seed=4)
    finals = []
    for bs, acc in ((6, 1), (3, 2)):
        model = tiny_llama(seed=2)
        # adam_eps >> |grad| makes Adam's first step ~linear in the gradient (instead of ~sign(grad), which
        # would amplify float rounding of near-zero gradients into full-size differences).
        cfg = sft.SFTConfig(lr=1e-2, max_steps=1, batch_size=bs, grad_accum=acc, warmup_ratio=0.0,
                            label_smoothing=0.1, adam_eps=1.0)
        sft.train_sft(model, examples, cfg, pad_id=0, progress=False)
        finals.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(finals[0], finals[1], rtol=1e-5, atol=1e-6)


def test_sum_reduction_scales_the_first_step_gradient():
    examples = random_examples(4, seed=5)
    norms = {}
    for red in ("mean", "sum"):
        model = tiny_llama(seed=2)
        hist = sft.train_sft(model, examples, sft.SFTConfig(lr=1e-3, max_steps=1, batch_size=4, reduce_loss=red,
                                                             warmup_ratio=0.0), pad_id=0, progress=False)
        norms[red], tokens = hist["grad_norm"][0], hist["tokens"][0]
    assert norms["sum"] == pytest.approx(norms["mean"] * tokens, rel=1e-4)


def test_training_lowers_the_loss():
    examples = random_examples(8, seed=6)[:2] * 2  # memorisable
    model = tiny_llama(seed=1)
    hist = sft.train_sft(model, examples, sft.SFTConfig(lr=1e-2, max_steps=12, batch_size=4, warmup_ratio=0.1),
                         pad_id=0, progress=False)
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]
    assert hist["steps"] == 12 and hist["warmup_steps"] == 2


class Killed(RuntimeError):
    pass


def test_killed_run_resumes_to_identical_weights(tmp_path):
    examples = random_examples(10, seed=7)
    cfg = sft.SFTConfig(lr=5e-3, max_steps=7, batch_size=2, grad_accum=2, warmup_ratio=0.3, label_smoothing=0.1,
                        checkpoint_every=2, seed=11)
    reference = tiny_llama(seed=3)
    ref_hist = sft.train_sft(reference, examples, cfg, pad_id=0, progress=False)

    def kill_after_5(step, record):
        if step == 5:
            raise Killed  # dies after step 5: the step-4 checkpoint survives, step 5's work is lost

    ckpt = tmp_path / "ckpt"
    with pytest.raises(Killed):
        sft.train_sft(tiny_llama(seed=3), examples, cfg, pad_id=0, checkpoint_dir=ckpt, on_step=kill_after_5,
                      progress=False)
    assert io.read_json(ckpt / checkpoint.SCALARS)["step"] == 4
    resumed = tiny_llama(seed=3)  # the same base weights (they are fingerprinted); steps 1-4 must be skipped
    steps_run = []
    hist = sft.train_sft(resumed, examples, cfg, pad_id=0, checkpoint_dir=ckpt, progress=False,
                         on_step=lambda step, record: steps_run.append(step))
    assert steps_run == [5, 6, 7]
    for (name, p), q in zip(reference.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name
    assert hist["loss"] == ref_hist["loss"] and hist["step"] == list(range(1, 8))
    # A finished run's checkpoint is final: calling again (same base) trains nothing and gives the same weights.
    again_model = tiny_llama(seed=3)
    again = sft.train_sft(again_model, examples, cfg, pad_id=0, checkpoint_dir=ckpt, progress=False)
    assert again["step"] == hist["step"] and again["loss"] == hist["loss"]
    for p, q in zip(reference.parameters(), again_model.parameters()):
        assert torch.equal(p, q)


def test_no_checkpoint_every_writes_no_checkpoint(tmp_path):
    # Without checkpoint_every nothing is written (a large model's checkpoint is gigabytes).
    sft.train_sft(tiny_llama(), random_examples(4, seed=8), sft.SFTConfig(lr=1e-2, max_steps=1), pad_id=0,
                  checkpoint_dir=tmp_path / "n", progress=False)
    assert not (tmp_path / "n").exists()


def test_config_validation_names_the_argument():
    for kwargs, name in [({"lr": 0}, "lr"), ({"label_smoothing": 1.5}, "label_smoothing"),
                         ({"reduce_loss": "avg"}, "reduce_loss"), ({"loss_impl": "cce"}, "loss_impl"),
                         ({"warmup_ratio": 1.0}, "warmup_ratio"), ({"temperature": 0}, "temperature")]:
        with pytest.raises(ValueError, match=name):
            sft.SFTConfig(**kwargs)
