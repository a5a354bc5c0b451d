import copy
from pathlib import Path

import pytest
import yaml
from lmcal.core import config

REPO = Path(__file__).resolve().parents[1]


def default():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_default_and_tiny_configs_validate_and_fill_defaults():
    c = config.validate_config(default())
    assert c["ladder"]["eval_fraction"] == 0.05  # filled from the schema
    assert len(c["ladder"]["sizes"]) >= 4  # the size fits (entropy exponent, ladder alpha) need several points
    t = config.validate_config(yaml.safe_load((REPO / "tests" / "config" / "tiny.yaml").read_text()))
    assert t["datasets"]["kjv"]["selection"] == "first"


def test_every_section_schema_is_merged_and_documented():
    schema = config.load_schema()
    for path in (REPO / "workflow" / "schemas").glob("*.schema.yaml"):
        if path.name != "config.schema.yaml":
            assert path.name.removesuffix(".schema.yaml") in schema["properties"]


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda c: c["datasets"].__setitem__("bad", {"source": "wikipedia"}), "datasets.bad.source"),
        (lambda c: c.__setitem__("sedd", 1), "sedd"),
        (lambda c: c["ladder"].__setitem__("stpes", 3), "ladder.stpes"),
        (lambda c: c["ladder"].__setitem__("datasets", ["shakespeare", "wikitxt"]), "ladder.datasets[1]"),
        (lambda c: c["ladder"]["train"].__setitem__("lr", -0.1), "ladder.train.lr"),
        (lambda c: c.__setitem__("studies", ["ladder", "entropyy"]), "studies[1]"),
    ],
)
def test_bad_configs_fail_naming_the_key(mutate, key):
    c = copy.deepcopy(default())
    mutate(c)
    with pytest.raises(config.ConfigError) as err:
        config.validate_config(c)
    assert key in str(err.value)


def _set(c, path, value):
    *parents, leaf = path.split(".")
    for key in parents:
        c = c.setdefault(key, {})
    c[leaf] = value


# Every entry of the rename table, as it would appear in an old config (a wildcard is a concrete size).
OLD_SPELLINGS = [
    ("ladder.steps", 400, "ladder.train.steps"),
    ("ladder.batch_size", 32, "ladder.train.batch_size"),
    ("ladder.seq_len", 128, "ladder.train.seq_len"),
    ("ladder.lr", 0.006, "ladder.train.lr"),
    ("ladder.warmup_steps", 30, "ladder.train.warmup_steps"),
    ("ladder.eval_tokens", 65536, "ladder.train.eval_tokens"),
    ("emergence.sizes.h8.hidden_size", 8, "emergence.sizes.h8.hidden"),
    ("emergence.sizes.h12.n_layers", 2, "emergence.sizes.h12.layers"),
    ("emergence.sizes.h96.n_heads", 6, "emergence.sizes.h96.heads"),
    ("emergence.eval_threads", 1, "emergence.evaluate.threads"),
    ("emergence.eval_batch_size", 128, "emergence.evaluate.batch_size"),
    ("entropy.score_batch_size", 4, "entropy.score.batch_size"),
    ("sft.ladder_sizes", ["h16"], "sft.ladder.sizes"),
    ("sft.ladder_threads", 1, "sft.ladder.threads"),
    ("calibration.evalsets.arithmetic.operations", ["+", "-", "*"], "calibration.evalsets.arithmetic.ops"),
    ("sft.instruction_data.arithmetic.operations", "+-*", "sft.instruction_data.arithmetic.ops"),
]


def _matches(pattern: str, path: str) -> bool:
    p, q = pattern.split("."), path.split(".")
    return len(p) == len(q) and all(a in ("*", b) for a, b in zip(p, q))


def test_every_renamed_key_has_a_case_here():
    for old, new in config.RENAMED_KEYS.items():
        assert any(_matches(old, o) and _matches(new, n) for o, _, n in OLD_SPELLINGS), old


@pytest.mark.parametrize("old, value, new", OLD_SPELLINGS)
def test_old_spelling_fails_naming_the_new_key(old, value, new):
    c = copy.deepcopy(default())
    _set(c, old, value)
    with pytest.raises(config.ConfigError) as err:
        config.validate_config(c)
    assert str(err.value) == f"config key {old} was renamed: use {new}"


def test_old_spelling_in_an_omitted_section_or_a_paper_config_is_caught_too():
    # a whole old-style emergence size map, the way config/paper/emergence.yaml used to spell it
    old = {"emergence": {"sizes": {"r01": {"hidden_size": 16, "n_layers": 1, "n_heads": 2}}}}
    with pytest.raises(config.ConfigError, match=r"emergence\.sizes\.r01\.hidden_size was renamed: use "
                                                 r"emergence\.sizes\.r01\.hidden$"):
        config.validate_config(old)
    # the new spelling of the same size passes and keeps its values
    new = copy.deepcopy(default())
    new["emergence"]["sizes"] = {"r01": {"hidden": 16, "layers": 1, "heads": 2}}
    new["emergence"]["analysis"]["n_holdout"] = 0  # one size: holding any out leaves nothing to fit (an error)
    assert config.validate_config(new)["emergence"]["sizes"] == {"r01": {"hidden": 16, "layers": 1, "heads": 2}}


def test_new_spellings_validate_and_keep_the_default_values():
    c = config.validate_config(default())
    assert c["ladder"]["train"] == {"seq_len": 128, "batch_size": 32, "steps": 400, "lr": 0.006,
                                    "warmup_steps": 30, "eval_tokens": 65536}
    assert c["emergence"]["sizes"]["h24"] == {"hidden": 24, "layers": 2, "heads": 3}
    assert c["emergence"]["evaluate"] == {"threads": 1, "batch_size": 128}
    assert c["entropy"]["score"] == {"batch_size": 4}
    assert c["sft"]["ladder"] == {"sizes": ["h96"], "threads": 1}
    for path in sorted((REPO / "config" / "paper").glob("*.yaml")):  # paper configs merge over the default
        config.check_renamed_keys(yaml.safe_load(path.read_text()))


def test_final_targets_follow_studies():
    assert config.final_targets({"studies": ["ladder", "sft"]}) == ["results/ladder/summary.json",
                                                                     "results/sft/summary.json",
                                                                     "results/report/results.md"]
    # the README results section needs a study with claim records; the losses benchmark has none
    assert config.final_targets({"studies": ["losses"]}) == ["results/losses/summary.json"]
    assert config.claim_studies({"studies": ["emergence", "losses", "ladder", "entropy"]}) == [
        "ladder", "entropy", "emergence"]


def test_default_and_paper_configs_pass_the_reference_checks_with_model_granularity_by_default():
    c = config.validate_config(default())
    assert c["entropy"]["granularity"] == "model" and c["entropy"]["shard_samples"] is None
    overlays = sorted((REPO / "config" / "paper").glob("*.yaml")) + [REPO / "config" / n for n in
                                                                   ("calibrate_offline.yaml", "gemma_sft.yaml")]
    for path in overlays:  # merged over the default, as snakemake does
        merged = copy.deepcopy(default())
        stack = [(merged, yaml.safe_load(path.read_text()))]
        while stack:
            into, over = stack.pop()
            for k, v in over.items():
                if isinstance(v, dict) and isinstance(into.get(k), dict):
                    stack.append((into[k], v))
                else:
                    into[k] = v
        config.validate_config(merged)
    paper = yaml.safe_load((REPO / "config/paper/entropy.yaml").read_text())["entropy"]
    assert paper["granularity"] == "shard" and paper["shard_samples"] % paper["batch_size"] == 0


def test_an_overlay_drops_default_entries_set_to_null():
    from snakemake.utils import update_config

    merged = default()
    update_config(merged, yaml.safe_load((REPO / "config" / "gemma_sft.yaml").read_text()))  # as --configfile does
    c = config.validate_config(merged)
    assert set(c["calibration"]["evalsets"]) == {"countries", "countries_letter"}
    assert set(c["sft"]["instruction_data"]) == {"countries"}
    assert c["models"]["gemma3-270m"]["assemble"] is True and "smollm2" in c["models"]  # untouched entries stay
    # only the named maps: a null elsewhere is still a schema error naming the key
    bad = default()
    bad["ladder"]["train"] = None
    with pytest.raises(config.ConfigError, match="ladder.train"):
        config.validate_config(bad)
