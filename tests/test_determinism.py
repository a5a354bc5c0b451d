"""Determinism on one machine and thread count: the same emergence rung trained and evaluated twice is
bit-identical (weights, held-out CE per snapshot, stored generations and log-probs). Across machines only the
claims over seeds are expected to hold (README "Determinism")."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

TIMING = {"tokens_per_s", "seconds", "wall_s", "elapsed_s"}  # wall-clock fields, the only ones allowed to differ


def _weights_digest(model_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(model_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(model_dir.rglob("*.safetensors"))}


def _train_and_evaluate(root: Path):
    import torch

    from lmcal.emergence import tasks
    from lmcal.emergence.ladder import TrainSettings, train_rung
    from lmcal.emergence.study import build_task_data, evaluate_rung

    torch.set_num_threads(1)
    spec = tasks.TaskSpec(ops=["add"], digits=[1], formats=["fewshot", "scratchpad"], translit_lengths=[],
                          eval_items=4, n_shots=1)
    data = build_task_data(spec, 7, 120, 12)
    settings = TrainSettings(steps=8, batch_size=4, seq_len=32, lr=1e-2, warmup_steps=1, checkpoint_every=4,
                             snapshot_steps=[4], eval_every=4)
    out = root / "size~t" / "seed~1"
    hist = train_rung(dict(name="t", hidden=16, layers=1, heads=2), 1, data["train"]["text"],
                      data["heldout"]["text"], settings, out, root / "work", progress=False)
    outputs, samples = evaluate_rung(out, data["items"], size="t", seed=1, batch_size=8,
                                     pass_until=dict(components=["add1-fewshot"], items=2, budget=8, chunk=8,
                                                     min_hits=2))
    return data, {k: v for k, v in hist.items() if k not in TIMING}, _weights_digest(out), outputs, samples


def test_rerun_of_a_rung_is_bit_identical(tmp_path):
    a = _train_and_evaluate(tmp_path / "a")
    b = _train_and_evaluate(tmp_path / "b")
    for key in ("items", "train", "heldout"):
        pd.testing.assert_frame_equal(a[0][key], b[0][key])
    assert a[1] == b[1]  # losses and held-out CE per snapshot, compared exactly
    assert a[2] == b[2] and len(a[2]) == 2  # snapshot step~4 and the final model, byte for byte
    pd.testing.assert_frame_equal(a[3], b[3], check_exact=True)
    pd.testing.assert_frame_equal(a[4], b[4], check_exact=True)
    assert len(a[3]) and a[3]["step"].nunique() == 2
