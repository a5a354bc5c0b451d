"""Bad input fails early with a message that names it, and nothing is lost (issue 13 item 4); job granularity
(item 8): shard jobs merge into exactly the per-model job's files; the GPU-hour estimator."""

from __future__ import annotations

import copy
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from lmcal.core import io
from lmcal.core.config import ConfigError, emergence_component_names, validate_config

REPO = Path(__file__).resolve().parents[1]
TINY = yaml.safe_load((REPO / "tests/config/tiny.yaml").read_text())


def _with(**changes) -> dict:
    """The tiny config with dotted keys set, e.g. _with(**{"entropy.datasets": []})."""
    cfg = copy.deepcopy(TINY)
    for dotted, value in changes.items():
        node = cfg
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg


BAD_CONFIGS = [
    ("entropy.datasets", [], r"config key entropy\.datasets: empty"),
    ("ladder.datasets", [], r"config key ladder\.datasets: empty"),
    ("sft.vd.datasets", [], r"config key sft\.vd\.datasets: empty"),
    ("entropy_analysis.temperature_decodes", ["t1.0", "t0.5"],
     r"entropy_analysis\.temperature_decodes\[1\]: unknown decode \(entropy\.decodes\) 't0\.5' \(known: t1\.0, t0\.8\)"),
    ("emergence.pass_until.components", ["add3-fewshot"],
     r"emergence\.pass_until\.components\[0\]: unknown component .*'add3-fewshot'.*add2-fewshot"),
    ("emergence.reference.components", ["sub1-direct"], r"emergence\.reference\.components\[0\]: unknown component"),
    ("sft.recipe.evalsets", ["nosuch"], r"sft\.recipe\.evalsets\[0\]: unknown evaluation set .*'nosuch'.*arithmetic"),
    ("entropy_analysis.zipf.tokenizer", "nosuch", r"entropy_analysis\.zipf\.tokenizer: unknown model 'nosuch'"),
    ("emergence.reference.models", ["nosuch"], r"emergence\.reference\.models\[0\]: unknown model 'nosuch'"),
    ("emergence.analysis.n_holdout", 4, r"emergence\.analysis\.n_holdout: 4 holds out all 4 emergence\.sizes"),
    ("entropy.granularity", "shard", r"entropy\.shard_samples: required with entropy\.granularity: shard"),
]


@pytest.mark.parametrize("key,value,message", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_fails_before_any_job_naming_the_key(key, value, message):
    validate_config(_with())  # the unmodified tiny config passes
    with pytest.raises(ConfigError, match=message):
        validate_config(_with(**{key: value}))


def test_empty_lists_are_fine_where_no_study_reads_them():
    cfg = _with(**{"studies": ["calibration"], "entropy.datasets": [], "sft.vd.datasets": []})
    validate_config(cfg)


def test_shard_samples_must_keep_the_batches():
    with pytest.raises(ConfigError, match=r"entropy\.shard_samples: 4 is not a multiple of the sampler's shard size 3"):
        validate_config(_with(**{"entropy.granularity": "shard", "entropy.shard_samples": 4}))
    with pytest.raises(ConfigError, match=r"entropy\.shard_samples: 6 is not a multiple of entropy\.score\.batch_size 4"):
        validate_config(_with(**{"entropy.granularity": "shard", "entropy.shard_samples": 6}))
    validate_config(_with(**{"entropy.granularity": "shard", "entropy.shard_samples": 12}))


@pytest.mark.parametrize("tasks", [
    {"ops": ["add", "sub", "mul"], "digits": [1, 3], "formats": ["direct", "fewshot", "scratchpad"],
     "translit_lengths": [3, 5]},
    {"ops": ["mul"], "digits": [2], "formats": ["scratchpad", "fewshot"], "translit_lengths": []},
])
def test_component_names_from_config_match_the_emergence_items(tasks):
    from lmcal.emergence.tasks import TaskSpec, make_eval_items

    items = make_eval_items(TaskSpec(**tasks, eval_items=2), seed=0)
    assert emergence_component_names(tasks) == list(dict.fromkeys(items["component"]))


# ------------------------------------------------------------------------------------ broken files


def _truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


@pytest.mark.parametrize("keep", [4, 200, -100])
def test_truncated_model_weights_name_the_file(tiny_model_dir, keep):
    from lmcal.models.store import load_model

    weights = tiny_model_dir / "model.safetensors"
    _truncate(weights, keep if keep > 0 else weights.stat().st_size + keep)
    with pytest.raises(OSError, match=rf"{weights}: truncated or corrupt safetensors file.*delete it and rerun"):
        load_model(tiny_model_dir)


def test_truncated_token_stream_names_file_and_rule(tmp_path):
    from lmcal.models.tokenizers import load_token_streams, save_token_streams

    path = tmp_path / "results/ladder/tokens.safetensors"
    streams = {"train": np.arange(1000, dtype=np.int32), "eval": np.arange(10, dtype=np.int32)}
    save_token_streams(path, **streams)
    assert {k: v.tolist() for k, v in load_token_streams(path).items()} == {k: v.tolist() for k, v in streams.items()}
    _truncate(path, path.stat().st_size - 8)
    with pytest.raises(OSError, match=r"tokens\.safetensors: truncated.*data ends at byte \d+, file has \d+.*"
                                      r"rule train_tokenizer writes it again"):
        load_token_streams(path)


def test_weights_are_one_declared_file(tiny_model_dir):
    """Rules declare results/models/<m>/model.safetensors as an output: deleting it makes snakemake rebuild it."""
    assert sorted(p.name for p in tiny_model_dir.glob("*.safetensors")) == ["model.safetensors"]
    rules = {f: (REPO / "workflow/rules" / f).read_text() for f in ("data.smk", "ladder.smk", "sft.smk")}
    assert 'weights="results/models/{model}/model.safetensors"' in rules["data.smk"]
    assert 'weights="results/models/ladder-{size}/model.safetensors"' in rules["ladder.smk"]
    assert 'weights="results/models/{base}--sft-{tag}/model.safetensors"' in rules["sft.smk"]


def test_tokenizer_of_another_model_is_refused(tiny_model_dir, tmp_path):
    from lmcal.models import tokenizers
    from lmcal.models.store import load_model

    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefghijklmnop"), 5)) for _ in range(400)]
    big = tokenizers.train_bpe_tokenizer([" ".join(words)] * 3, vocab_size=400)
    assert len(big) > 300
    big.save_pretrained(tiny_model_dir)  # overwrite the model's tokenizer with a larger one
    with pytest.raises(ValueError, match=rf"tokenizer has {big.vocab_size} tokens but the model's embedding has \d+ rows"):
        load_model(tiny_model_dir)


def test_added_special_tokens_past_the_embedding_only_warn(tiny_model_dir):
    """SmolLM2's GGUF tokenizer adds five infill tokens past its 49152 rows: that model is fine, not foreign."""
    from transformers import AutoTokenizer

    from lmcal.models.store import load_model

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    n_rows = load_model(tiny_model_dir)[0].get_input_embeddings().num_embeddings
    tok.add_special_tokens({"additional_special_tokens": [f"<extra{i}>" for i in range(n_rows - len(tok) + 3)]})
    assert len(tok) > n_rows >= tok.vocab_size
    tok.save_pretrained(tiny_model_dir)
    with pytest.warns(UserWarning, match="past the model's"):
        model, loaded = load_model(tiny_model_dir)
    assert len(loaded) == len(tok)


def test_prompt_longer_than_the_context_is_refused(tiny_model_dir, tmp_path):
    from lmcal.entropy.runs import run_sampling

    prompts = tmp_path / "prompts/data~a.parquet"
    io.write_parquet(pd.DataFrame({"doc_id": ["d0"], "prompt_ids": [list(range(5, 255))], "prompt_len": [250],
                                   "continuation_ids": [[5, 6]]}), prompts)
    out = tmp_path / "samples/data~a/decode~t1.0.parquet"
    with pytest.raises(ValueError, match=r"a prompt of 250 tokens \+ 8 new tokens exceeds the 256-position context"):
        run_sampling(tiny_model_dir, [prompts], [out], decodes={"t1.0": {"temperature": 1.0}}, seed=0,
                     max_new_tokens=8, batch_size=1, shard_root=tmp_path / "shards")
    assert not out.exists()


def test_hub_id_without_network_says_offline(monkeypatch, tmp_path):
    from huggingface_hub import constants
    from lmcal.models.store import fetch_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing to fall back on
    with pytest.raises(ConnectionError, match=r"hub id 'lmcal-test/no-such-model' is not in the local cache .* "
                                              r"unreachable or offline \(HF_HUB_OFFLINE=1 is set\).*source: local"):
        fetch_model({"source": "hub", "id": "lmcal-test/no-such-model", "revision": None})


# ------------------------------------------------------------------------------------ permissions


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_respect_the_umask(tmp_path, umask):
    from lmcal.models.tokenizers import save_token_streams

    old = os.umask(umask)
    try:
        io.write_json({"a": 1}, tmp_path / "x.json")
        io.write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "x.parquet")
        save_token_streams(tmp_path / "t.safetensors", train=np.arange(3, dtype=np.int32))
        with io.atomic_dir(tmp_path / "model") as d:
            (d / "f").write_text("x")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")  # what an ordinary open() gives under this umask
    finally:
        os.umask(old)
    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    for name in ("x.json", "x.parquet", "t.safetensors"):
        assert mode(tmp_path / name) == 0o666 & ~umask == mode(plain), name
    assert mode(tmp_path / "model") == 0o777 & ~umask
    assert mode(tmp_path / "model" / "f") == 0o666 & ~umask


def test_model_dir_files_respect_the_umask(tiny_model_dir):
    """save_model_dir (safetensors writes its own 0600 file) under the test process's umask."""
    umask = io.current_umask()
    assert stat.S_IMODE(tiny_model_dir.stat().st_mode) == 0o777 & ~umask
    for f in tiny_model_dir.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f.name


# ------------------------------------------------------------------------------------ granularity


@pytest.fixture
def prompt_file(tiny_model_dir, tmp_path) -> Path:
    rng = np.random.default_rng(0)
    lens = [3, 7, 4, 9, 5, 6]
    df = pd.DataFrame({"doc_id": [f"d{i}" for i in range(6)],
                       "prompt_ids": [rng.integers(3, 250, n).tolist() for n in lens], "prompt_len": lens,
                       "continuation_ids": [rng.integers(3, 250, 5 + i).tolist() for i in range(6)]})
    path = tmp_path / "prompts/data~a.parquet"
    io.write_parquet(df, path)
    return path


DECODES = {"t1.0": {"temperature": 1.0}, "t0.8": {"temperature": 0.8}}


def test_shard_granularity_gives_the_per_model_samples_bit_for_bit(tiny_model_dir, prompt_file, tmp_path):
    from lmcal.entropy.runs import gather, run_sampling

    kw = {"decodes": DECODES, "seed": 3, "max_new_tokens": 6, "batch_size": 2, "samples_per_prompt": 1}
    whole = [tmp_path / f"model/data~a/decode~{k}.parquet" for k in DECODES]
    run_sampling(tiny_model_dir, [prompt_file], whole, shard_root=tmp_path / "s-model", **kw)
    for k, out in zip(DECODES, whole):
        parts = []
        for j in range(3):  # shard_samples = 2 = the sampler's shard size
            part = tmp_path / f"parts/part~{j}/data~a/decode~{k}.parquet"
            run_sampling(tiny_model_dir, prompt_file, part, shard_root=tmp_path / f"s-{j}-{k}",
                         sample_range=(2 * j, 2 * j + 2), **kw)
            parts.append(part)
        merged = tmp_path / f"merged/data~a/decode~{k}.parquet"
        stats = gather(parts, merged, kind="samples")
        pd.testing.assert_frame_equal(pd.read_parquet(merged), pd.read_parquet(out), check_exact=True)
        side, ref = io.read_json(merged.with_suffix(".json")), io.read_json(out.with_suffix(".json"))
        for key in ("n_samples", "generated_tokens", "mean_entropy", "mean_gen_len", "frac_eos", "seed", "decode"):
            assert side[key] == ref[key] == (stats[key] if key in stats else ref[key]), key
        assert side["n_parts"] == 3 and "sample_range" not in side


def test_shard_granularity_gives_the_per_model_scores_bit_for_bit(tiny_model_dir, prompt_file, tmp_path):
    from lmcal.entropy.runs import gather, run_scoring

    whole = [tmp_path / f"model/data~a/decode~{k}.parquet" for k in DECODES]
    run_scoring(tiny_model_dir, [prompt_file], whole, decodes=DECODES, batch_size=2)
    parts = {k: [] for k in DECODES}
    for j in range(2):  # documents 0-3, 4-5
        outs = [tmp_path / f"parts/part~{j}/data~a/decode~{k}.parquet" for k in DECODES]
        run_scoring(tiny_model_dir, prompt_file, outs, decodes=DECODES, batch_size=2, doc_range=(4 * j, 4 * j + 4))
        for k, o in zip(DECODES, outs):
            parts[k].append(o)
    for k, out in zip(DECODES, whole):
        merged = tmp_path / f"merged/data~a/decode~{k}.parquet"
        gather(parts[k], merged, kind="human")
        pd.testing.assert_frame_equal(pd.read_parquet(merged), pd.read_parquet(out), check_exact=True)


def test_gather_refuses_parts_out_of_order(tiny_model_dir, prompt_file, tmp_path):
    from lmcal.entropy.runs import gather, run_sampling

    parts = []
    for j in (1, 0):
        part = tmp_path / f"parts/part~{j}/data~a/decode~t1.0.parquet"
        run_sampling(tiny_model_dir, prompt_file, part, decodes=DECODES, seed=0, max_new_tokens=2, batch_size=2,
                     shard_root=tmp_path / f"s{j}", sample_range=(2 * j, 2 * j + 2))
        parts.append(part)
    with pytest.raises(ValueError, match=r"do not hold samples 0\.\.3 in order"):
        gather(parts, tmp_path / "m/data~a/decode~t1.0.parquet", kind="samples")


def test_gpu_hour_estimate_known_answer_and_sharding():
    from lmcal.workflow import cost

    cfg = {"models": {"big": {"id": "org/Model-72B"}, "small": {"id": "org/thing-410m"}},
           "ladder": {"sizes": {"h16": {"hidden": 16, "layers": 2}}, "vocab_size": 100},
           "entropy": {"models": ["big", "small", "ladder-h16"], "datasets": ["a", "b"], "decodes": {"t1": {}, "t2": {}},
                       "n_samples": 1000, "prompt_tokens": 100, "max_new_tokens": 900}}
    assert cost.nominal_params("big", cfg) == 72e9 and cost.nominal_params("small", cfg) == 410e6
    assert cost.nominal_params("ladder-h16", cfg) == 12 * 2 * 16**2 + 100 * 16
    rows = cost.entropy_jobs(cfg)
    assert [(r["rule"], r["job"]) for r in rows] == [("entropy_sample", m) for m in cfg["entropy"]["models"]]
    big = cost.largest(rows)
    # one job samples and scores: 1000 samples x 1000 tokens x 2 datasets x 2 decodes at 5% MFU, plus
    # 1000 documents x 1000 tokens x 2 datasets (once for all decodes) at 30%; 2 x 72e9 FLOPs per token
    sample_h, score_h = (t * 2 * 72e9 / (989e12 * mfu) / 3600 for t, mfu in ((4e6, 0.05), (2e6, 0.30)))
    assert big["job"] == "big" and big["tokens"] == 6e6
    assert big["gpu_hours"] == pytest.approx(sample_h + score_h) == pytest.approx(3.505, abs=1e-3)
    sharded = cost.entropy_jobs({**cfg, "entropy": {**cfg["entropy"], "granularity": "shard", "shard_samples": 300}})
    parts = [r for r in sharded if r["rule"] == "entropy_sample_part"]
    scores = [r for r in sharded if r["rule"] == "entropy_score_part"]
    assert len(parts) == 3 * 2 * 2 * 4  # models x datasets x decodes x ceil(1000 / 300)
    assert len(scores) == 3 * 2 * 4 and len(sharded) == len(parts) + len(scores)  # models x datasets x parts
    # the parts add up to the per-model jobs: same tokens, same GPU-hours
    assert sum(r["gpu_hours"] for r in sharded) == pytest.approx(sum(r["gpu_hours"] for r in rows))
    assert sum(r["tokens"] for r in sharded) == sum(r["tokens"] for r in rows)
    assert cost.largest(sharded)["gpu_hours"] == pytest.approx(sample_h * 300 / 4000)
    with pytest.raises(ValueError, match="model 'nameless'"):
        cost.nominal_params("nameless", {"models": {"nameless": {"id": "org/foo"}}})
