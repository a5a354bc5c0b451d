"""The MLflow UI opens on the work: the experiment is marked model development (runs table, not a GenAI traces
overview), has a description, and jobs' data inputs are dataset inputs with name, source and digest."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from lmcal.core import ingest, io, tracking
from mlflow.tracking import MlflowClient
from snakemake.iocontainers import Namedlist

REPO = Path(__file__).resolve().parents[1]


def _job_reading_data(root: Path) -> SimpleNamespace:
    """A job whose inputs are documents, prompts (parquet + its json), a token stream, an eval set, a model and a
    manifest, with paths relative to the working directory as Snakemake gives them."""
    files = {
        "docs": "results/data/wiki/documents.parquet",
        "manifest": "results/data/wiki/manifest.json",
        "prompts": "results/entropy/prompts/model~m/data~wiki.parquet",
        "prompts_meta": "results/entropy/prompts/model~m/data~wiki.json",
        "tokens": "results/ladder/tokens.safetensors",
        "evalset": "results/calibration/evalsets/arith.parquet",
        "model": "results/models/m/model.safetensors",
    }
    for key, rel in files.items():
        path = root / rel
        if path.suffix == ".parquet":
            io.write_parquet(pd.DataFrame({"doc_id": [key], "text": [f"{key} text"]}), path)
        elif path.suffix == ".json":
            io.write_json({"of": key}, path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(np.arange(10, dtype=np.int32).tobytes())
    return SimpleNamespace(rule="reader", threads=1, wildcards=Namedlist(fromdict={"model": "m"}),
                           params=Namedlist(fromdict={}), input=Namedlist(fromdict=files),
                           output=Namedlist(fromdict={"out": "results/out.json"}),
                           log=Namedlist(["results/logs/reader.log"]))


def test_experiment_kind_description_and_dataset_inputs(mlflow_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    smk = _job_reading_data(tmp_path)
    with tracking.job_run(smk):
        io.write_json({"ok": True}, smk.output.out)
    c = MlflowClient(mlflow_store)
    exp = c.get_experiment_by_name(tracking.EXPERIMENT)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "one child run per job" in exp.tags["mlflow.note.content"]
    (run,) = c.search_runs([exp.experiment_id])
    got = {d.dataset.name: d for d in c.get_run(run.info.run_id).inputs.dataset_inputs}
    assert sorted(got) == ["calibration/evalsets/arith", "data/wiki/documents", "entropy/prompts/model~m/data~wiki",
                           "ladder/tokens"]  # not the model, the manifest, or the prompts' json beside its parquet
    docs = got["data/wiki/documents"]
    raw = hashlib.sha256((tmp_path / smk.input.docs).read_bytes()).hexdigest()
    assert docs.dataset.digest == hashlib.sha256(raw.encode()).hexdigest()[:16]
    assert json.loads(docs.dataset.source) == {"uri": str((tmp_path / smk.input.docs).resolve())}
    assert docs.dataset.source_type == "local" and docs.tags[0].value == "input"
    assert len({d.dataset.digest for d in got.values()}) == 4


def test_experiment_made_by_an_older_lmcal_gets_the_tags(mlflow_store):
    c = MlflowClient(mlflow_store)
    exp_id = c.create_experiment(tracking.EXPERIMENT)  # no tags: the UI would guess GenAI
    assert ingest.ensure_experiment() == exp_id
    tags = c.get_experiment(exp_id).tags
    assert {k: tags[k] for k in ingest.EXPERIMENT_TAGS} == ingest.EXPERIMENT_TAGS


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="chromium is not installed (apt-get install -y chromium)")
def test_screenshot_of_the_runs_page(mlflow_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracking.start_parent({})
    smk = _job_reading_data(tmp_path)
    with tracking.job_run(smk):
        io.write_json({"ok": True}, smk.output.out)
    tracking.finish_parent("FINISHED")
    tracking.os.environ.pop(tracking.ENV_PARENT, None)
    spec = importlib.util.spec_from_file_location("screenshot_mlflow", REPO / "workflow/scripts/screenshot_mlflow.py")
    shot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shot)
    png = shot.screenshot(mlflow_store, tmp_path / "runs.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1600, 1000) and len(data) > 20_000  # a rendered page, not a blank one
