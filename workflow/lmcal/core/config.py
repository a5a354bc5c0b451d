"""Config validation: JSON Schema with defaults, plus cross-references the schema cannot express.

`workflow/schemas/config.schema.yaml` holds the top-level and foundation keys; each study adds
`workflow/schemas/<section>.schema.yaml` for its own top-level key. A bad config fails before any job starts with
a message that names the offending key (e.g. ``entropy.datasets[1]: unknown dataset 'wikitxt'``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
MAIN_SCHEMA = "config.schema.yaml"


class ConfigError(ValueError):
    """A config value is invalid; the message names the key."""


def load_schema(schema_dir: Path = SCHEMA_DIR) -> dict[str, Any]:
    """The main schema with every section schema merged in under its file's name."""
    schema = yaml.safe_load((schema_dir / MAIN_SCHEMA).read_text())
    for path in sorted(schema_dir.glob("*.schema.yaml")):
        if path.name == MAIN_SCHEMA:
            continue
        section = path.name[: -len(".schema.yaml")]
        sub = yaml.safe_load(path.read_text())
        sub.setdefault("default", {})  # an omitted section still gets its nested defaults
        sub.pop("$schema", None)  # a nested $schema would switch to jsonschema's plain, non-default-filling validator
        schema.setdefault("properties", {})[section] = sub
    return schema


def _extend_with_defaults(cls):
    """Validator that fills `default` values in as it validates (the jsonschema FAQ recipe)."""
    validate_props = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return jsonschema.validators.extend(cls, {"properties": set_defaults})


DefaultFillingValidator = _extend_with_defaults(jsonschema.Draft202012Validator)


def _key(path: Iterable[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


# Keys that were spelled differently before (old path -> new path; `*` is any entry of a map such as
# emergence.sizes). One spelling per concept is documented in config/README.md ("Spelling").
RENAMED_KEYS: dict[str, str] = {
    **{f"ladder.{k}": f"ladder.train.{k}" for k in ("steps", "batch_size", "seq_len", "lr", "warmup_steps",
                                                     "eval_tokens")},
    "emergence.sizes.*.hidden_size": "emergence.sizes.*.hidden",
    "emergence.sizes.*.n_layers": "emergence.sizes.*.layers",
    "emergence.sizes.*.n_heads": "emergence.sizes.*.heads",
    "emergence.eval_threads": "emergence.evaluate.threads",
    "emergence.eval_batch_size": "emergence.evaluate.batch_size",
    "entropy.score_batch_size": "entropy.score.batch_size",
    "sft.ladder_sizes": "sft.ladder.sizes",
    "sft.ladder_threads": "sft.ladder.threads",
    # arithmetic operators: symbols "+-*" became the emergence spelling (ops: [add, sub, mul])
    "calibration.evalsets.*.operations": "calibration.evalsets.*.ops",
    "sft.instruction_data.*.operations": "sft.instruction_data.*.ops",
}


def _find(node: Any, parts: list[str], done: list[str]) -> Iterable[list[str]]:
    """Concrete key paths in ``node`` matching ``parts`` (``*`` matches every key of a map)."""
    if not parts:
        yield done
        return
    if not isinstance(node, dict):
        return
    head, rest = parts[0], parts[1:]
    for key in (list(node) if head == "*" else [head] if head in node else []):
        yield from _find(node[key], rest, done + [str(key)])


def check_renamed_keys(config: dict[str, Any], renamed: dict[str, str] = RENAMED_KEYS) -> None:
    """Raise ConfigError for the first old spelling in ``config``, naming the key to use instead."""
    for old, new in renamed.items():
        for path in _find(config, old.split("."), []):
            # a wildcard stands at the same depth in the old and the new path: fill it with the matched map key
            concrete = [path[i] if part == "*" else part for i, part in enumerate(new.split("."))]
            raise ConfigError(f"config key {'.'.join(path)} was renamed: use {'.'.join(concrete)}")


def validate_config(config: dict[str, Any], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate ``config`` in place (filling defaults) and return it; raise ConfigError naming the key."""
    check_renamed_keys(config)  # before the schema, so an old config names its new key, not "unknown key"
    schema = schema or load_schema()
    validator = DefaultFillingValidator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        e = errors[0]
        where = _key(e.absolute_path)
        if e.validator == "additionalProperties":
            extra = sorted(set(e.instance) - set(e.schema.get("properties", {})))
            allowed = ", ".join(sorted(e.schema.get("properties", {})))
            prefix = f"{where}." if e.absolute_path else ""
            raise ConfigError(f"config key {prefix}{extra[0]}: unknown key (allowed here: {allowed})")
        raise ConfigError(f"config key {where}: {e.message}")
    check_references(config)
    return config


def _check_names(config: dict, section: str, key: str, known: Iterable[str], what: str) -> None:
    values = config.get(section, {}).get(key)
    if values is None:
        return
    known = set(known)
    for i, name in enumerate(values if isinstance(values, list) else [values]):
        if name not in known:
            raise ConfigError(f"config key {section}.{key}[{i}]: unknown {what} {name!r} (known: {', '.join(sorted(known))})")


def model_names(config: dict[str, Any]) -> list[str]:
    """Every model name a study may use: configured real models plus the trained ladder."""
    return list(config.get("models", {})) + [f"ladder-{s}" for s in config.get("ladder", {}).get("sizes", {})]


def check_references(config: dict[str, Any]) -> None:
    """Names used by studies must be defined: datasets, models, studies."""
    datasets = config.get("datasets", {})
    models = model_names(config)
    _check_names(config, "ladder", "datasets", datasets, "dataset")
    for section in ("entropy", "entropy_analysis", "sft", "calibration", "emergence"):
        _check_names(config, section, "datasets", datasets, "dataset")
        _check_names(config, section, "models", models, "model")
    for i, study in enumerate(config.get("studies", [])):
        if study not in STUDIES:
            raise ConfigError(f"config key studies[{i}]: unknown study {study!r} (known: {', '.join(STUDIES)})")


STUDIES = ("ladder", "entropy", "calibration", "sft", "emergence", "losses")


def final_targets(config: dict[str, Any]) -> list[str]:
    """What `rule all` builds: each enabled study's summary."""
    return [f"results/{study}/summary.json" for study in config.get("studies", [])]


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a YAML config file (what the Snakefile does, usable from Python)."""
    return validate_config(yaml.safe_load(Path(path).read_text()) or {})
