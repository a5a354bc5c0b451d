"""Decoding transforms against hand-computed distributions (lmcal.lm.decode)."""

import math

import pytest
import torch
from lmcal.lm.decode import DecodeConfig, entropy, mixture_logloss

P = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
LOGITS = P.log().float() + 3.0  # any shift: logits are normalised first


def probs(cfg: DecodeConfig, logits: torch.Tensor = LOGITS) -> torch.Tensor:
    return cfg.apply(logits).double().exp()


def close(a, b, tol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol)


def test_temperature_matches_power_of_probabilities():
    assert close(probs(DecodeConfig()), P)
    # tau = 0.5 squares the probabilities: [1, 4, 9, 16] / 30
    assert close(probs(DecodeConfig(temperature=0.5)), torch.tensor([1, 4, 9, 16]) / 30)
    # tau = 2 takes square roots
    r = P.sqrt()
    assert close(probs(DecodeConfig(temperature=2.0)), r / r.sum())


def test_top_k_keeps_k_largest_and_renormalises():
    assert close(probs(DecodeConfig(top_k=2)), [0, 0, 3 / 7, 4 / 7])
    assert close(probs(DecodeConfig(top_k=1)), [0, 0, 0, 1])
    assert close(probs(DecodeConfig(top_k=10)), P)  # k >= vocab: no-op


def test_top_k_keeps_ties_at_the_boundary():
    flat = torch.zeros(4)
    assert close(probs(DecodeConfig(top_k=2), flat), [0.25] * 4)


def test_top_p_smallest_prefix_reaching_mass():
    # sorted 0.4, 0.3, 0.2, 0.1; mass before each: 0, 0.4, 0.7, 0.9
    assert close(probs(DecodeConfig(top_p=0.5)), [0, 0, 3 / 7, 4 / 7])
    assert close(probs(DecodeConfig(top_p=0.35)), [0, 0, 0, 1])
    assert close(probs(DecodeConfig(top_p=0.75)), [0, 2 / 9, 3 / 9, 4 / 9])
    assert close(probs(DecodeConfig(top_p=1.0)), P)


def test_min_p_relative_to_mode():
    # threshold 0.6 * 0.4 = 0.24
    assert close(probs(DecodeConfig(min_p=0.6)), [0, 0, 3 / 7, 4 / 7])
    assert close(probs(DecodeConfig(min_p=0.2)), P)  # 0.08 < all


def test_epsilon_absolute_threshold_keeps_mode():
    assert close(probs(DecodeConfig(epsilon=0.15)), [0, 2 / 9, 3 / 9, 4 / 9])
    assert close(probs(DecodeConfig(epsilon=0.5)), [0, 0, 0, 1])  # nothing >= 0.5: the mode survives


def test_truncations_compose_in_order_on_renormalised_distribution():
    # top_k=3 -> [0, 2/9, 3/9, 4/9]; then top_p=0.6 on that: mass before 3/9 is 4/9 < 0.6, before 2/9 is 7/9
    assert close(probs(DecodeConfig(top_k=3, top_p=0.6)), [0, 0, 3 / 7, 4 / 7])
    # temperature first: tau=0.5 gives [1,4,9,16]/30; top_p=0.6 keeps 16/30 and 9/30 (mass before 9/30 = .533)
    assert close(probs(DecodeConfig(temperature=0.5, top_p=0.6)), [0, 0, 9 / 25, 16 / 25])


def test_apply_returns_normalised_log_probs_with_minus_inf_outside():
    lp = DecodeConfig(top_k=2).apply(LOGITS)
    assert lp.dtype == torch.float32
    assert torch.isinf(lp[:2]).all() and (lp[:2] < 0).all()
    assert math.isclose(float(lp.exp().sum()), 1.0, abs_tol=1e-6)


def test_apply_works_on_batched_tensors():
    x = torch.randn(2, 3, 11)
    cfg = DecodeConfig(temperature=0.7, top_p=0.8)
    out = cfg.apply(x)
    for i in range(2):
        for j in range(3):
            assert torch.equal(out[i, j], cfg.apply(x[i, j]))


def test_entropy_known_values():
    assert math.isclose(float(entropy(torch.full((4,), math.log(0.25)))), math.log(4), rel_tol=1e-6)
    two = torch.tensor([-math.inf, math.log(0.5), math.log(0.5)])
    assert math.isclose(float(entropy(two)), math.log(2), rel_tol=1e-6)
    assert float(entropy(torch.tensor([0.0, -math.inf]))) == 0.0


def test_mixture_logloss_finite_and_exact_without_truncation():
    eps = 0.1
    out = mixture_logloss(torch.tensor([-math.inf]), torch.tensor([math.log(0.05)], dtype=torch.float64), eps)
    assert math.isclose(float(out), -math.log(eps * 0.05), rel_tol=1e-12)
    same = mixture_logloss(torch.tensor([math.log(0.3)]), torch.tensor([math.log(0.3)]), eps)
    assert math.isclose(float(same), -math.log(0.3), rel_tol=1e-7)
    with pytest.raises(ValueError, match="eps"):
        mixture_logloss(torch.tensor([0.0]), torch.tensor([0.0]), 0.0)


def test_is_truncating():
    assert not DecodeConfig(temperature=0.8).is_truncating
    assert not DecodeConfig(top_p=1.0, min_p=0.0).is_truncating
    assert DecodeConfig(top_k=5).is_truncating and DecodeConfig(epsilon=1e-3).is_truncating


@pytest.mark.parametrize("kwargs, name", [
    ({"temperature": 0.0}, "temperature"), ({"temperature": -1.0}, "temperature"),
    ({"temperature": float("nan")}, "temperature"), ({"top_k": 0}, "top_k"), ({"top_k": 2.5}, "top_k"),
    ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"min_p": -0.1}, "min_p"), ({"epsilon": 1.0}, "epsilon"),
])
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        DecodeConfig(**kwargs)


def test_from_dict_roundtrip_and_unknown_keys():
    cfg = DecodeConfig.from_dict({"temperature": 0.9, "top_p": 0.95, "min_p": None})
    assert cfg == DecodeConfig(temperature=0.9, top_p=0.95)
    assert DecodeConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="top_q"):
        DecodeConfig.from_dict({"top_q": 0.9})
