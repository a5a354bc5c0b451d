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


# Name -> spec maps where an overlay config may remove an entry of the default by setting it to null: Snakemake
# merges --configfile over config/config.yaml key by key, so an overlay could otherwise only add entries.
REMOVABLE_MAPS = ("models", "datasets", "calibration.evalsets", "sft.instruction_data")


def drop_removed_entries(config: dict[str, Any], maps: Iterable[str] = REMOVABLE_MAPS) -> None:
    """Delete the entries set to null in the name -> spec maps ``maps`` (in place)."""
    for dotted in maps:
        node = _get(config, dotted)
        if isinstance(node, dict):
            for name in [k for k, v in node.items() if v is None]:
                del node[name]


def validate_config(config: dict[str, Any], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate ``config`` in place (filling defaults) and return it; raise ConfigError naming the key.

    Entries of ``REMOVABLE_MAPS`` set to null are removed first (an overlay config's way to drop a default one)."""
    drop_removed_entries(config)
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
    check_study_inputs(config, models)


def _get(config: dict, dotted: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _check_list(config: dict, dotted: str, known: Iterable[str], what: str) -> None:
    known = list(known)
    for i, name in enumerate(_get(config, dotted) or []):
        if name not in known:
            raise ConfigError(f"config key {dotted}[{i}]: unknown {what} {name!r} (known: {', '.join(known) or 'none'})")


def _require_nonempty(config: dict, dotted: str, why: str) -> None:
    if not _get(config, dotted):
        raise ConfigError(f"config key {dotted}: empty, but {why}; list at least one name from `datasets`")


def emergence_component_names(tasks: dict[str, Any]) -> list[str]:
    """Component names "{op}{n}-{format}" of ``emergence.tasks`` (schema defaults filled), in the order of
    lmcal.emergence.tasks.TaskSpec.components; computed here from the config alone so core stays torch-free
    (tests/test_bad_input.py checks that both agree)."""
    names = [f"{op}{int(n)}-{f}" for f in tasks.get("formats", []) for op in tasks.get("ops", [])
             for n in tasks.get("digits", []) if f != "scratchpad" or op == "add"]
    return names + [f"map{int(n)}-direct" for n in tasks.get("translit_lengths", [])]


def check_study_inputs(config: dict[str, Any], models: list[str]) -> None:
    """Values that pass a dry run but would fail (or be silently changed) hours into a run."""
    studies = set(config.get("studies", []))
    if "entropy" in studies:
        _require_nonempty(config, "entropy.datasets", "the entropy study samples prompts from these corpora")
        decodes = list(_get(config, "entropy.decodes", {}))
        _check_list(config, "entropy_analysis.temperature_decodes", decodes, "decode (entropy.decodes)")
        ref = _get(config, "entropy_analysis.reference_decode")
        if ref is not None and ref not in decodes:
            raise ConfigError(f"config key entropy_analysis.reference_decode: unknown decode {ref!r} "
                              f"(entropy.decodes: {', '.join(decodes)})")
        tok = _get(config, "entropy_analysis.zipf.tokenizer")
        if tok is not None and tok != "words" and tok not in models:
            raise ConfigError(f"config key entropy_analysis.zipf.tokenizer: unknown model {tok!r} "
                              f"(use 'words' or one of: {', '.join(models)})")
        check_granularity(config)
    used = [m for s in ("entropy", "calibration", "emergence.reference") for m in _get(config, f"{s}.models") or []]
    used += [f"ladder-{s}" for s in _get(config, "sft.ladder.sizes") or []] + [_get(config, "entropy_analysis.zipf.tokenizer")]
    if "ladder" in studies or any(str(m).startswith("ladder-") for m in used if m):
        _require_nonempty(config, "ladder.datasets", "the ladder tokenizer and models train on these corpora")
    if "sft" in studies:
        evalsets = list(_get(config, "calibration.evalsets", {}))
        _check_list(config, "sft.recipe.evalsets", evalsets, "evaluation set (calibration.evalsets)")
        for base in _get(config, "sft.overrides", {}) or {}:
            _check_list(config, f"sft.overrides.{base}.evalsets", evalsets, "evaluation set (calibration.evalsets)")
        if _get(config, "sft.vd.vocab_sizes") and _get(config, "sft.vd.hidden_sizes"):
            _require_nonempty(config, "sft.vd.datasets", "the V/D study trains its tokenizers on these corpora")
    if "emergence" in studies:
        components = emergence_component_names(_get(config, "emergence.tasks", {}))
        for key in ("emergence.pass_until.components", "emergence.reference.components"):
            _check_list(config, key, components, "component (from emergence.tasks)")
        _check_list(config, "emergence.reference.models", models, "model")
        n_sizes, n_holdout = len(_get(config, "emergence.sizes", {})), _get(config, "emergence.analysis.n_holdout", 0)
        if n_holdout >= n_sizes:
            raise ConfigError(f"config key emergence.analysis.n_holdout: {n_holdout} holds out all {n_sizes} "
                              f"emergence.sizes, leaving none to fit; use at most {n_sizes - 1}")


def check_granularity(config: dict[str, Any]) -> None:
    """``entropy.shard_samples`` must be a whole number of sampler shards, so a shard job draws exactly the
    batches the per-model job draws (bit-identical merged samples)."""
    ent = config.get("entropy", {})
    n = ent.get("shard_samples")
    if ent.get("granularity", "model") != "shard":
        return
    if n is None:
        raise ConfigError("config key entropy.shard_samples: required with entropy.granularity: shard "
                          "(samples per sampling/scoring job)")
    shard = ent.get("shard_size") or ent.get("batch_size", 16)
    if n % shard:
        raise ConfigError(f"config key entropy.shard_samples: {n} is not a multiple of the sampler's shard size "
                          f"{shard} (entropy.shard_size, or entropy.batch_size when that is null)")
    score_batch = _get(config, "entropy.score.batch_size", 4)
    if n % score_batch:
        raise ConfigError(f"config key entropy.shard_samples: {n} is not a multiple of entropy.score.batch_size "
                          f"{score_batch}, so scoring shards would batch documents differently")


STUDIES = ("ladder", "entropy", "calibration", "sft", "emergence", "losses")


CLAIM_STUDIES = ("ladder", "entropy", "sft", "emergence")  # studies whose summary.json carries claim records


def claim_studies(config: dict[str, Any]) -> list[str]:
    """Enabled studies whose summaries feed the README results section (lmcal.report), in CLAIM_STUDIES order."""
    return [s for s in CLAIM_STUDIES if s in config.get("studies", [])]


def final_targets(config: dict[str, Any]) -> list[str]:
    """What `rule all` builds: each enabled study's summary and, if any has claims, the README results section."""
    out = [f"results/{study}/summary.json" for study in config.get("studies", [])]
    return out + (["results/report/results.md"] if claim_studies(config) else [])


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a YAML config file (what the Snakefile does, usable from Python)."""
    return validate_config(yaml.safe_load(Path(path).read_text()) or {})
