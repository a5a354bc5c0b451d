"""One source of metric names per family: calibration (lmcal.calibration.metrics.SCORES/HEADLINE/SCORE_LABELS)
and emergence (lmcal.emergence.metrics.METRICS/SHARP/SOFT/LABELS); summaries, tables, figures and V/D cells read it.
"""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest

from lmcal.calibration import metrics as cal
from lmcal.emergence import figures as efigs
from lmcal.emergence import metrics as em
from lmcal.emergence import report
from lmcal.sft import figures as sfigs
from lmcal.sft import summary as ssum
from lmcal.sft import vd

PROBS = [[0.7, 0.2, 0.1], [0.4, 0.6], [0.25, 0.25, 0.5], [0.9, 0.05, 0.05]]
GOLD = [0, 0, 2, 1]


def test_calibration_metrics_computes_exactly_the_named_scores():
    m = cal.calibration_metrics(PROBS, GOLD, n_bins=5)
    assert list(m) == ["n_items", "n_bins", "binning", *cal.SCORES]
    assert set(cal.SCORE_LABELS) == set(cal.SCORES) and set(cal.HEADLINE) <= set(cal.SCORES)
    assert m["accuracy"] == pytest.approx(0.5) and m["chance_accuracy"] == pytest.approx((1 / 3 * 3 + 1 / 2) / 4)


def _runs(model="m"):
    out = []
    for ev, shift in (("a", 0), ("b", 1)):
        m = cal.calibration_metrics(PROBS[shift:] + PROBS[:shift], GOLD[shift:] + GOLD[:shift], n_bins=5)
        out.append({"model": model, "evalset": ev, **m})
    return out


def test_summary_reports_every_score_per_run_and_per_model():
    summary = cal.summarize_runs(_runs())
    assert all(set(cal.SCORES) <= set(r) for r in summary["runs"])
    assert list(summary["per_model"]["m"]) == list(cal.SCORES)  # ece_all_choices included
    assert summary["per_model"]["m"]["brier"] == pytest.approx(np.mean([r["brier"] for r in _runs()]))


def test_a_score_added_to_the_one_list_reaches_the_summary(monkeypatch):
    runs = [dict(r, sharpness=0.25 + i) for i, r in enumerate(_runs())]
    monkeypatch.setattr(cal, "SCORES", (*cal.SCORES, "sharpness"))
    monkeypatch.setattr(cal, "SUMMARY_KEYS", (*cal.SUMMARY_KEYS, "sharpness"))
    summary = cal.summarize_runs(runs)
    assert summary["per_model"]["m"]["sharpness"] == pytest.approx(0.75)
    assert [r["sharpness"] for r in summary["runs"]] == [0.25, 1.25]


def test_sft_table_figure_and_vd_cells_read_the_calibration_names(tmp_path):
    assert vd.METRICS == cal.SCORES
    from lmcal.core import io

    paths = []
    for r in _runs("base") + _runs("sft"):
        paths.append(str(tmp_path / f"{r['model']}-{r['evalset']}.json"))
        io.write_json(r, paths[-1])
    pairs = [(m, e) for m in ("base", "sft") for e in ("a", "b")]
    metrics = ssum.collect_metrics(pairs, paths)
    assert set(cal.SCORES) <= set(metrics.columns)
    run = {"name": "sft", "base": "base", "kind": "main", "evalsets": ["a", "b"], "label_smoothing": 0.1,
           "lr": 1e-3, "seed": 0, "train": {}}
    table = ssum.before_after_table([run], metrics, {})
    for k in cal.HEADLINE:
        assert table[f"{k}_before"].tolist() == metrics.set_index("model").loc["base", k].tolist()
    fig = sfigs.before_after(table.assign(n_params_non_embedding=1))
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert sorted(labels) == sorted(cal.SCORE_LABELS[k] for k in cal.HEADLINE)


def test_emergence_names_are_one_family():
    assert set(em.SHARP) | set(em.SOFT) <= set(em.METRICS) and not set(em.SHARP) & set(em.SOFT)
    assert set(em.LABELS) == set(em.METRICS) and efigs.LABELS is em.LABELS
    f2 = inspect.signature(efigs.plot_mirage_panel).parameters["metrics"].default
    assert set(f2) <= set(em.METRICS)
    assert inspect.signature(report.emergence_table).parameters["metrics"].default == em.SHARP + em.SOFT


def test_emergence_aggregate_carries_every_metric_and_intervals_for_the_sharp_ones():
    row = dict(item_id="x", format="direct", answer="12", target="12", generation="13", gen_ids=[1, 3],
               target_ids=[1, 2], target_logprobs=[np.log(0.5)] * 2, stop_logprob=np.log(0.9),
               choice_logprobs=[np.log(0.3), np.log(0.1)], gold=0, size="s")
    scores = em.score_outputs(pd.DataFrame([row, dict(row, item_id="y", generation="12")]))
    assert set(em.METRICS) <= set(scores.columns)
    agg = em.aggregate_scores(scores, by=["size"])
    assert set(em.METRICS) <= set(agg.columns)
    assert {f"{m}_lo" for m in em.SHARP} <= set(agg.columns)
    assert not {f"{m}_lo" for m in em.SOFT} & set(agg.columns)
