import json

import pytest
import torch
from lmcal.models import llama as ladder
from lmcal.models import store as models


def test_count_parameters_counts_tied_embeddings_once():
    m = ladder.build_llama({"hidden": 16, "layers": 1, "heads": 2, "intermediate": 32, "tie_embeddings": True},
                           vocab_size=100)
    total, non_emb = models.count_parameters(m)
    # embedding 100*16 (tied with lm_head); per layer: q,k,v,o 4*16*16, mlp 3*16*32, 2 norms 2*16; final norm 16
    layer = 4 * 16 * 16 + 3 * 16 * 32 + 2 * 16
    assert non_emb == layer + 16
    assert total == non_emb + 100 * 16


def test_count_parameters_untied_excludes_both_embeddings():
    m = ladder.build_llama({"hidden": 16, "layers": 1, "heads": 2, "intermediate": 32, "tie_embeddings": False},
                           vocab_size=100)
    total, non_emb = models.count_parameters(m)
    assert total - non_emb == 2 * 100 * 16


def test_saved_model_dir_round_trips(tiny_model_dir):
    info = models.load_model_info(tiny_model_dir)
    model, tok = models.load_model(tiny_model_dir)
    assert info.vocab_size == model.config.vocab_size == len(tok)
    assert (info.n_params, info.n_params_non_embedding) == models.count_parameters(model)
    assert info.hidden_size == 32 and info.n_layers == 2
    assert info.eos_token_ids == [tok.eos_token_id]
    assert not any(p.suffix in {".bin", ".pt", ".pkl"} for p in tiny_model_dir.iterdir()), "weights must be safetensors"
    ids = tok("the quick brown fox", return_tensors="pt").input_ids
    with torch.no_grad():
        assert model(ids).logits.shape == (1, ids.shape[1], info.vocab_size)


def test_load_model_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        models.load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="model_info.json"):
        models.load_model_info(tmp_path)
    with pytest.raises(ValueError, match="source must be one of"):
        models.fetch_model({"source": "ftp"})
    with pytest.raises(FileNotFoundError, match="not installed"):
        models.gguf_location("no_such_package_xyz", "m.gguf")


def test_local_source_loads_a_directory(tiny_model_dir, tmp_path):
    info = models.cache_model({"source": "local", "path": str(tiny_model_dir)}, "copy", tmp_path / "copy")
    assert info.source == "local" and info.origin == str(tiny_model_dir)
    assert json.loads((tmp_path / "copy" / "model_info.json").read_text())["name"] == "copy"


def test_model_info_params_are_flat():
    info = models.ModelInfo("m", "hub", 10, 5, 100, 8, 2, extra={"loss": 1.5})
    p = info.as_params()
    assert p["extra.loss"] == 1.5 and "extra" not in p


def test_resolved_revision_prefers_the_served_commit():
    from types import SimpleNamespace

    from lmcal.models.store import resolved_revision

    sha = "0123456789abcdef0123456789abcdef01234567"
    served = SimpleNamespace(config=SimpleNamespace(_commit_hash=sha))
    assert resolved_revision(served, None) == sha
    assert resolved_revision(served, sha) == sha
    assert resolved_revision(served, "main") == f"main@{sha}"
    local = SimpleNamespace(config=SimpleNamespace())
    assert resolved_revision(local, None) == "main" and resolved_revision(local, "v1.0") == "v1.0"
