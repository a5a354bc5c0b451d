"""Parse-time helpers for the entropy rule files (torch-free).
"""

from __future__ import annotations


def zipf_tokenizer_inputs(tokenizer: str) -> list[str]:
    """Files the Zipf rule needs for ``tokenizer``: none for "words", else that model's ``model_info.json``."""
    return [] if tokenizer == "words" else [f"results/models/{tokenizer}/model_info.json"]
