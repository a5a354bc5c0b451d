"""The SFT study as a sweep: which runs exist, what each job needs, one run end to end, and the result tables.

A sweep point is one fine-tuned model ``{base}--sft-b{beta}-lr{lr}-s{seed}`` (plus ``-t{T}``, ``-tm``,
``-cap{s}`` for the temperature/softcap ablations), written to ``results/models/{name}/`` like any other model so
``evaluate_calibration`` scores it unchanged. The plan is a pure function of the config, so the rules, the
parameter look-ups and the aggregation all agree on it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from lmcal.core.paths import fmt_num
from lmcal.workflow.datasets import eval_settings, train_only_flags

SFT_MARK = "--sft-"
BASE_PATTERN = r"(?:(?!--sft-)[A-Za-z0-9_.+-])+"
TAG_PATTERN = r"b[0-9.]+-lr[0-9.e+-]+-s[0-9]+(?:-t[0-9.]+)?(?:-tm)?(?:-cap[0-9.]+)?"
TRAIN_KEYS = ("epochs", "max_steps", "batch_size", "grad_accum", "warmup_ratio", "weight_decay", "max_grad_norm",
              "reduce_loss", "loss_impl", "temperature", "temperature_loss_multiplier", "softcap",
              "checkpoint_every")


def run_name(base: str, beta: float, lr: float, seed: int, temperature: float = 1.0,
             temperature_loss_multiplier: bool = False, softcap: float | None = None) -> str:
    """``{base}--sft-b{beta}-lr{lr}-s{seed}`` with ablation suffixes only where they differ from the default."""
    name = f"{base}{SFT_MARK}b{fmt_num(beta)}-lr{fmt_num(lr)}-s{int(seed)}"
    if temperature != 1.0:
        name += f"-t{fmt_num(temperature)}"
    if temperature_loss_multiplier:
        name += "-tm"
    if softcap is not None:
        name += f"-cap{fmt_num(softcap)}"
    if not re.fullmatch(f"{BASE_PATTERN}{SFT_MARK}{TAG_PATTERN}", name):
        raise ValueError(f"base: {base!r} does not make a valid SFT model name ({name!r})")
    return name


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def recipe_for(sft_cfg: dict, model: str) -> dict:
    """The ``sft.recipe`` with ``sft.overrides[model]`` merged over it."""
    return _merge(sft_cfg["recipe"], sft_cfg.get("overrides", {}).get(model, {}))


def base_models(config: dict) -> list[str]:
    """``sft.models`` plus the ladder models named by ``sft.ladder.sizes`` (null: every ladder size)."""
    sft_cfg = config["sft"]
    sizes = sft_cfg.get("ladder", {}).get("sizes")
    all_sizes = list(config.get("ladder", {}).get("sizes", {}))
    sizes = all_sizes if sizes is None else list(sizes)
    unknown = [s for s in sizes if s not in all_sizes]
    if unknown:
        raise ValueError(f"sft.ladder.sizes: unknown ladder size {unknown[0]!r} (known: {all_sizes})")
    out = list(sft_cfg.get("models", [])) + [f"ladder-{s}" for s in sizes]
    return list(dict.fromkeys(out))


def prompt_settings(config: dict, data: str) -> dict:
    """How SFT renders prompts so that they match the evaluation's (``calibration.template``/``chat_template``).

    The plain template's user turn is the evaluation template with ``{question}`` as the message and the
    assistant turn is " " + the answer, exactly the continuation the option-likelihood evaluation scores;
    ``chat_template`` never/auto/always maps to use_chat_template False/None (tokenizer decides)/True.
    """
    calib = config.get("calibration", {})
    spec = config["sft"]["instruction_data"].get(data, {})
    ev = calib.get("evalsets", {}).get(spec.get("evalset") or "", {})
    template = ev.get("template") or calib.get("template") or "Question: {question}\nAnswer:"
    chat = {"never": False, "auto": None, "always": True}[calib.get("chat_template", "never")]
    return {"plain_template": {"user": template.replace("{question}", "{content}"), "assistant": " {content}"},
            "use_chat_template": chat}


def _run(config: dict, base: str, recipe: dict, beta: float, lr: float, seed: int, kind: str) -> dict:
    train = {k: recipe[k] for k in TRAIN_KEYS if k in recipe}
    name = run_name(base, beta, lr, seed, train.get("temperature", 1.0),
                    train.get("temperature_loss_multiplier", False), train.get("softcap"))
    prompt = prompt_settings(config, recipe["data"])
    return {"name": name, "base": base, "kind": kind, "label_smoothing": float(beta), "lr": float(lr),
            "seed": int(seed), "data": recipe["data"], "evalsets": list(recipe["evalsets"]),
            "max_length": recipe.get("max_length"),
            "plain_template": recipe.get("plain_template") or prompt["plain_template"],
            "use_chat_template": recipe.get("use_chat_template", prompt["use_chat_template"]), "train": train}


def plan_runs(config: dict) -> list[dict]:
    """Every SFT run of the study: the main grid (model × β × lr × seed) and the ablation grids."""
    sft_cfg = config["sft"]
    runs: dict[str, dict] = {}
    for base in base_models(config):
        r = recipe_for(sft_cfg, base)
        for beta in r["label_smoothing"]:
            for lr in r["lrs"]:
                for seed in r["seeds"]:
                    run = _run(config, base, r, beta, lr, seed, "main")
                    runs.setdefault(run["name"], run)
    for i, abl in enumerate(sft_cfg.get("ablations", [])):
        for base in abl["models"]:
            r = recipe_for(sft_cfg, base)
            for temp in abl.get("temperature", [1.0]):
                for cap in abl.get("softcap", [None]):
                    rr = _merge(r, {"temperature": temp, "softcap": cap,
                                    "temperature_loss_multiplier": abl.get("temperature_loss_multiplier", False)})
                    for beta in abl.get("label_smoothing", r["label_smoothing"]):
                        for lr in abl.get("lrs", r["lrs"]):
                            for seed in abl.get("seeds", r["seeds"]):
                                run = _run(config, base, rr, beta, lr, seed, f"ablation{i}")
                                runs.setdefault(run["name"], run)
    for run in runs.values():
        if run["data"] not in sft_cfg["instruction_data"]:
            raise ValueError(f"sft.recipe.data: {run['name']} uses unknown instruction data {run['data']!r}")
    return list(runs.values())


def run_lookup(config: dict) -> Callable[[Any], dict]:
    """Snakemake params function: wildcards (base, tag) → the planned run of that model."""
    runs = {r["name"]: r for r in plan_runs(config)}

    def lookup(wildcards) -> dict:
        name = f"{wildcards.base}{SFT_MARK}{wildcards.tag}"
        if name not in runs:
            raise ValueError(f"model {name!r} is not in the SFT plan (check sft.recipe / sft.overrides)")
        return runs[name]

    return lookup


def data_path(name: str) -> str:
    return f"results/sft/data/{name}.parquet"


def data_input(config: dict) -> Callable[[Any], str]:
    """Snakemake input function: wildcards (base, tag) → the instruction data file of that run."""
    lookup = run_lookup(config)
    return lambda wildcards: data_path(lookup(wildcards)["data"])


def evalset_path(name: str) -> str:
    return f"results/calibration/evalsets/{name}.parquet"


def data_eval_input(config: dict) -> Callable[[Any], list[str]]:
    """Snakemake input function: wildcards (data) → the evaluation items the data must avoid ([] if none)."""
    def lookup(wildcards) -> list[str]:
        ev = config["sft"]["instruction_data"][wildcards.data].get("evalset")
        if ev and ev not in config.get("calibration", {}).get("evalsets", {}):
            raise ValueError(f"sft.instruction_data.{wildcards.data}.evalset: unknown evaluation set {ev!r}")
        return [evalset_path(ev)] if ev else []

    return lookup


def data_spec(config: dict) -> Callable[[Any], dict]:
    """Snakemake params function: wildcards (data) → the data spec with its evaluation split filled in.

    Country data takes the evaluation set's ``eval_fraction``/``split_seed``/``fields`` so SFT facts come from
    the other side of the split; arithmetic data takes its operand range and operators (overriding the data's
    own), and the rule excludes the evaluation's questions; fact-world data takes the ``facts:`` settings.
    """
    def lookup(wildcards) -> dict:
        spec = dict(config["sft"]["instruction_data"][wildcards.data])
        ev = config.get("calibration", {}).get("evalsets", {}).get(spec.get("evalset") or "", {})
        keys = {"countries": ("eval_fraction", "split_seed", "fields"),
                "arithmetic": ("max_operand", "ops")}.get(spec["kind"], ())
        for k in keys:  # the evaluation's values win: the data must come from the same distribution / split
            if k in ev:
                spec[k] = ev[k]
        if spec["kind"] == "facts":  # the knowledge world's SFT side: one facts: block for corpus, data and items
            spec["settings"] = dict(config.get("facts") or {})
        return spec

    return lookup


def metrics_path(model: str, evalset: str) -> str:
    return f"results/calibration/model~{model}/eval~{evalset}/metrics.json"


def evaluation_pairs(config: dict) -> list[tuple[str, str]]:
    """(model, evalset) pairs the study reads: every base and every SFT model on its recipe's evalsets."""
    pairs = []
    for run in plan_runs(config):
        for ev in run["evalsets"]:
            pairs += [(run["base"], ev), (run["name"], ev)]
    return list(dict.fromkeys(pairs))


def metric_targets(config: dict) -> list[str]:
    return [metrics_path(m, e) for m, e in evaluation_pairs(config)]


def model_targets(config: dict) -> list[str]:
    return [f"results/models/{r['name']}/model_info.json" for r in plan_runs(config)]


def history_targets(config: dict) -> list[str]:
    return [f"results/sft/history/{r['name']}.parquet" for r in plan_runs(config)]


def threads_of(config: dict) -> Callable[..., int]:
    """Snakemake threads function: tiny ladder models get ``sft.ladder.threads``, others ``sft.threads``."""
    def threads(wildcards) -> int:
        small = wildcards.base.startswith("ladder-")
        return int(config["sft"]["ladder"]["threads"] if small else config["sft"]["threads"])

    return threads


def vd_run(config: dict) -> dict:
    """The SFT run settings of the V/D study: ``sft.recipe`` with ``sft.vd.recipe`` merged over it."""
    recipe = _merge(config["sft"]["recipe"], config["sft"]["vd"].get("recipe", {}))
    return _run(config, "vd", recipe, 0.0, recipe["lrs"][0], recipe["seeds"][0], "vd")


def vd_targets(config: dict) -> list[str]:
    """Per-cell result tables of the V/D study, V-major ([] when it is disabled); each cell job runs every seed."""
    vd = config["sft"]["vd"]
    if not vd["enabled"]:
        return []
    if not vd["seeds"] or len(set(vd["seeds"])) != len(vd["seeds"]):
        raise ValueError(f"sft.vd.seeds: need at least one seed and no repeats, got {vd['seeds']}")
    unknown = [d for d in vd["datasets"] if d not in config.get("datasets", {})]
    if unknown:
        raise ValueError(f"sft.vd.datasets: unknown dataset {unknown[0]!r}")
    bad = [d for d in vd["hidden_sizes"] if d % vd["heads"]]
    if bad:
        raise ValueError(f"sft.vd.hidden_sizes: {bad[0]} is not divisible by sft.vd.heads={vd['heads']}")
    if 0.0 not in [float(b) for b in vd["label_smoothing"]]:
        raise ValueError("sft.vd.label_smoothing: must include 0.0 (the cross-entropy reference)")
    return [f"results/sft/vd/cells/v{v}-d{d}.parquet" for v in vd["vocab_sizes"] for d in vd["hidden_sizes"]]


def vd_train_only(config: dict) -> list[bool]:
    """One flag per ``sft.vd.datasets`` entry: True for corpora that go to the train stream only (the fact corpus).

    ``sft.vd.train_only`` names them; null (the default) takes the ladder's ``ladder.train_only``, so the corpus
    declared train-only once stays out of every held-out stream.
    """
    vd = config["sft"]["vd"]
    if vd.get("train_only") is not None:
        return train_only_flags(list(vd["datasets"]), list(vd["train_only"]), "sft.vd.train_only",
                                listed_in="sft.vd.datasets")
    # inherited names may list corpora the V/D study does not use, so they are not checked against its datasets
    return train_only_flags(list(vd["datasets"]), list(config.get("ladder", {}).get("train_only") or []),
                            "ladder.train_only")


def items_targets(config: dict) -> list[str]:
    return [p.replace("metrics.json", "items.parquet") for p in metric_targets(config)]


def info_targets(config: dict) -> list[str]:
    """model_info.json of every base and SFT model the study reads."""
    names = dict.fromkeys(r["base"] for r in plan_runs(config))
    return [f"results/models/{m}/model_info.json" for m in names] + model_targets(config)
