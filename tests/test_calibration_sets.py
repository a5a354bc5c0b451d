"""lmcal.calibration.sets: one job scoring a model on several sets writes what per-set scoring would."""

from __future__ import annotations

from pathlib import Path

import pytest
from lmcal.calibration import mcq
from lmcal.calibration.sets import evaluate_sets
from lmcal.core import io
from lmcal.data.evalsets import build_evalset
from lmcal.models import store as models


class _Run:
    def __init__(self):
        self.metrics, self.tables = {}, []

    def log_metrics(self, m):
        self.metrics.update(m)

    def log_table(self, table, name):
        self.tables.append(name)


def test_evaluate_sets_matches_per_set_scoring_and_logs_by_set(tiny_model_dir, tmp_path):
    model, tok = models.load_model(tiny_model_dir)
    specs = {"add": {"kind": "arithmetic", "n_items": 6, "n_choices": 4, "seed": 0, "max_operand": 9, "ops": ["add"]},
             "mul": {"kind": "arithmetic", "n_items": 5, "n_choices": 3, "seed": 1, "max_operand": 9, "ops": ["mul"]}}
    paths, settings = [], {"add": {"method": "option", "n_bins": 4}, "mul": {"normalization": "mean", "n_bins": 4}}
    for name, spec in specs.items():
        paths.append(str(tmp_path / f"{name}.parquet"))
        io.write_parquet(build_evalset(spec), paths[-1])
    outputs = {k: [str(tmp_path / name / f"{k}.{ext}") for name in specs]
               for k, ext in (("scored", "parquet"), ("metrics", "json"), ("figures", "png"))}
    run = _Run()
    got = evaluate_sets(model, tok, "tiny", list(specs), paths, settings, outputs, run)
    for i, name in enumerate(specs):
        _, want, _ = mcq.evaluate_calibration(model, tok, io.read_parquet(paths[i]), **settings[name])
        written = io.read_json(outputs["metrics"][i])
        assert written["evalset"] == name and written["model"] == "tiny"
        for key in ("accuracy", "ece", "brier", "n_items"):
            assert written[key] == pytest.approx(want[key]) and got[name][key] == pytest.approx(want[key])
            assert run.metrics[f"{name}.{key}"] == pytest.approx(want[key])
        assert len(io.read_parquet(outputs["scored"][i])) == specs[name]["n_items"]
        assert Path(outputs["figures"][i]).stat().st_size > 0
    assert run.tables == ["reliability/add.parquet", "reliability/mul.parquet"]
    assert got["mul"]["n_items"] == 5 and got["add"]["n_items"] == 6


def test_evaluate_sets_refuses_misaligned_outputs(tiny_model_dir, tmp_path):
    model, tok = models.load_model(tiny_model_dir)
    with pytest.raises(ValueError, match="2 sets"):
        evaluate_sets(model, tok, "tiny", ["a", "b"], ["a.parquet", "b.parquet"], {},
                      {"scored": ["x"], "metrics": ["y", "z"], "figures": ["p", "q"]})
