"""Shared fixtures: tiny random-initialised models and an isolated MLflow store. Nothing touches a hub."""

from __future__ import annotations

import os
from pathlib import Path

# Triton reads TRITON_INTERPRET once, at import; another module (torch.compile, say) may import triton before
# the Triton tests run, so without a GPU the CPU interpreter is switched on here, before anything else.
if not os.environ.get("CUDA_VISIBLE_DEVICES", "") and "TRITON_INTERPRET" not in os.environ:
    os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Tests never reach a hub; GPU tests run only when CUDA_VISIBLE_DEVICES names a device.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# Tiny models run fastest on one thread, and CI shares two cores between pytest and its subprocesses.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_local_run(tmp_path_factory):
    """The tiny whole-DAG config run once, locally (--cores 2): (workdir, CompletedProcess). The end-to-end test
    checks it and reruns it; the SLURM test compares its own outputs with it. One run serves both."""
    from workflow_utils import snakemake

    workdir = tmp_path_factory.mktemp("tiny-local")
    return workdir, snakemake(workdir, "--cores", "2", timeout=3000)


@pytest.fixture(scope="module")
def tiny():
    """A random tiny Llama over 97 ids (2 layers, GQA 4/2 heads), in eval mode; shared by module."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    """A saved tiny Llama with its own byte-level BPE tokenizer and model_info.json (like results/models/*)."""
    from lmcal.models import llama, tokenizers
    from lmcal.models import store as models

    texts = ["the quick brown fox jumps over the lazy dog " * 20, "def f(x):\n    return x + 1\n" * 20]
    tok = tokenizers.train_bpe_tokenizer(texts, vocab_size=300)
    model = llama.build_llama({"hidden": 32, "layers": 2, "heads": 4}, vocab_size=len(tok), max_position=256,
                              seed=0, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    info = models.describe(model, tok, name="tiny", source="test", origin=None, revision=None)
    out = tmp_path / "models" / "tiny"
    models.save_model_dir(model, tok, info, out)
    return out


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch) -> str:
    """A fresh sqlite MLflow store under tmp_path; returns its URI."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("LMCAL_ROOT", str(tmp_path))
    monkeypatch.delenv("LMCAL_PARENT_RUN_ID", raising=False)
    torch.manual_seed(0)
    return uri
