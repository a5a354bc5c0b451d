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
    assert len(c["ladder"]["sizes"]) >= 6
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
        (lambda c: c["ladder"].__setitem__("lr", -0.1), "ladder.lr"),
        (lambda c: c.__setitem__("studies", ["ladder", "entropyy"]), "studies[1]"),
    ],
)
def test_bad_configs_fail_naming_the_key(mutate, key):
    c = copy.deepcopy(default())
    mutate(c)
    with pytest.raises(config.ConfigError) as err:
        config.validate_config(c)
    assert key in str(err.value)


def test_final_targets_follow_studies():
    assert config.final_targets({"studies": ["ladder", "sft"]}) == ["results/ladder/summary.json",
                                                                     "results/sft/summary.json"]
