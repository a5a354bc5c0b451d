"""Parse-time helpers for the entropy rule files (torch-free).
"""

from __future__ import annotations


def zipf_tokenizer_inputs(tokenizer: str) -> list[str]:
    """Files the Zipf rule needs for ``tokenizer``: none for "words", else that model's ``model_info.json``."""
    return [] if tokenizer == "words" else [f"results/models/{tokenizer}/model_info.json"]


def granularity(config: dict) -> str:
    """``entropy.granularity``: "model" (one sampling and one scoring job per model) or "shard"."""
    return config["entropy"].get("granularity", "model")


def n_sample_parts(config: dict) -> int:
    """Shard jobs per (model, dataset, decode): samples (n_samples x samples_per_prompt) / shard_samples, rounded
    up. Fewer documents may qualify than n_samples; the parts past the end then hold no rows."""
    ent = config["entropy"]
    return -(-ent["n_samples"] * ent.get("samples_per_prompt", 1) // ent["shard_samples"])


def n_score_parts(config: dict) -> int:
    """Shard jobs per (model, dataset) of the human scoring (each covers every decode): documents / shard_samples."""
    ent = config["entropy"]
    return -(-ent["n_samples"] // ent["shard_samples"])


def part_range(part: int | str, size: int) -> tuple[int, int]:
    """[lo, hi) of shard ``part`` when every shard holds ``size`` rows."""
    return int(part) * size, (int(part) + 1) * size
