"""Dry runs, lint and config failures of the Snakemake workflow (subprocess; no job is executed)."""

import shutil
import time

import pytest
import yaml
from workflow_utils import REPO, job_counts, snakemake


def test_tiny_dry_run_plans_every_study(tmp_path):
    res = snakemake(tmp_path, "-n", "--cores", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    counts = job_counts(res.stdout)
    tiny = yaml.safe_load((REPO / "tests" / "config" / "tiny.yaml").read_text())
    assert counts["prepare_dataset"] == len(tiny["datasets"])
    assert counts["train_ladder_model"] == len(tiny["ladder"]["sizes"])
    assert counts["train_tokenizer"] == 1 and counts["ladder_summary"] == 1


def test_default_config_dry_run(tmp_path):
    res = snakemake(tmp_path, "-n", "--cores", "2", config=REPO / "config" / "config.yaml")
    assert res.returncode == 0, res.stderr[-3000:]
    counts = job_counts(res.stdout)
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert counts["train_ladder_model"] == len(default["ladder"]["sizes"]) >= 4
    assert counts["cache_model"] >= 1


@pytest.mark.parametrize("study", ["entropy", "sft", "emergence"])
def test_paper_configs_plan_a_dag(tmp_path, study):
    """config/paper/<study>.yaml merged over the default (as documented) validates and plans its study."""
    (tmp_path / "config").mkdir()  # the Snakefile's configfile: is read relative to the working directory
    shutil.copy(REPO / "config" / "config.yaml", tmp_path / "config" / "config.yaml")
    res = snakemake(tmp_path, "-n", "--cores", "2", config=REPO / "config" / "paper" / f"{study}.yaml", replace=False)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    counts = job_counts(res.stdout)
    rule = {"entropy": "entropy_sample_part", "sft": "sft_train", "emergence": "emergence_train"}[study]
    assert counts[rule] > 10
    if study == "entropy":  # granularity: shard: 33 models x 3 datasets x 5 decodes x ceil(5000 / 1024) parts
        assert counts["entropy_sample_part"] == 33 * 3 * 5 * 5 and counts["entropy_score_part"] == 33 * 3 * 5
        assert counts["entropy_gather_samples"] == counts["entropy_gather_human"] == 33 * 3 * 5
        assert "entropy_sample" not in counts


def test_gemma_config_plans_only_its_sft_study(tmp_path):
    """config/gemma_sft.yaml (the optional real-model SFT run) merged over the default plans one model cache, its
    base scoring and one SFT job per beta; planning needs no Gemma package (only running cache_model does)."""
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config" / "config.yaml", tmp_path / "config" / "config.yaml")
    res = snakemake(tmp_path, "-n", "--cores", "2", "results/sft/summary.json",
                    config=REPO / "config" / "gemma_sft.yaml", replace=False)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    counts = job_counts(res.stdout)
    assert counts == {"build_evalset": 2, "cache_model": 1, "evaluate_calibration": 1, "sft_data": 1,
                      "sft_train": 2, "sft_summary": 1}, counts
    assert "results/models/gemma3-270m--sft-b0.1-lr5e-05-s0/model_info.json" in res.stdout


def test_unknown_dataset_fails_fast_naming_the_key(tmp_path):
    bad = yaml.safe_load((REPO / "tests" / "config" / "tiny.yaml").read_text())
    bad["ladder"]["datasets"] = ["shakespeare", "wikitxt"]
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(bad))
    t0 = time.perf_counter()
    res = snakemake(tmp_path, "--cores", "2", config=cfg)
    elapsed = time.perf_counter() - t0
    assert res.returncode != 0
    assert "ladder.datasets[1]" in res.stderr and "wikitxt" in res.stderr
    assert not (tmp_path / "results").exists(), "no job may run on a bad config"
    print(f"bad config rejected in {elapsed:.1f} s")


def test_lint_is_clean(tmp_path):
    res = snakemake(tmp_path, "--lint")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]


def test_rules_are_snakefmt_formatted():
    import subprocess
    import sys

    rules = sorted(str(p) for p in (REPO / "workflow" / "rules").glob("*.smk"))
    res = subprocess.run([sys.executable, "-m", "snakefmt", "--check", str(REPO / "Snakefile"), *rules],
                         check=False, cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
