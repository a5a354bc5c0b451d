"""The one training checkpoint (``train_lm`` and ``train_sft``): resumable only under the settings it was written with.

A checkpoint directory holds ``state-{step}.safetensors`` (model weights, optimizer tensors, torch RNG states) and
``checkpoint.json`` (fingerprint, the settings it hashes, step, history, optimizer param_groups and scalars).
The JSON is written last and names its tensor file, so a job killed at any point leaves either the previous
complete checkpoint or a new complete one; nothing is pickled.

The fingerprint is the sha256 of a canonical JSON of everything that determines the result: training settings,
model config, a digest of the initial weights, and digests of the inputs (token streams, encoded examples,
tokenizer) as the trainer and its caller know them. ``restore`` resumes only on an exact fingerprint match with
matching tensor names and shapes; anything else (other settings, an unreadable or truncated file, an older
format) is reported in one line, the checkpoint is deleted, and training starts over. numpy and Python RNGs
are not saved: the trainers draw batches from generators seeded by (seed, step), never from global state.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmcal.core import io

log = logging.getLogger(__name__)

SCALARS = "checkpoint.json"
FORMAT = 1
LEGACY = ("checkpoint.safetensors", "optimizer.safetensors", "trainer_state.json", "settings.json")


# -------------------------------------------------------------------------------------------- digests


def canonical_json(obj: Any) -> str:
    """The one spelling of ``obj`` that is hashed: strict JSON (``io.jsonable``), sorted keys, no whitespace."""
    return json.dumps(io.jsonable(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)


def fingerprint(spec: dict) -> str:
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def array_digest(arr: np.ndarray | None) -> str | None:
    """sha256 of an array's dtype, shape and bytes (None stays None)."""
    if arr is None:
        return None
    arr = np.ascontiguousarray(arr)
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def examples_digest(examples) -> str:
    """sha256 of encoded examples (each a dict of int sequences), in order."""
    h = hashlib.sha256()
    for ex in examples:
        for key in sorted(ex):
            h.update(key.encode())
            h.update(array_digest(np.asarray(ex[key], dtype=np.int64)).encode())
        h.update(b"|")
    return h.hexdigest()


def tokenizer_digest(tokenizer) -> str:
    """sha256 of a tokenizer's definition: the fast tokenizer's JSON (without padding/truncation, which
    calls toggle), else its vocabulary; plus the special token ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("padding", "truncation")}
    else:
        spec = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    special = {k: getattr(tokenizer, k, None) for k in ("eos_token_id", "bos_token_id", "pad_token_id", "unk_token_id")}
    return fingerprint({"tokenizer": spec, "special": special, "size": len(tokenizer)})


def model_tensors(model) -> dict[str, torch.Tensor]:
    """The model's state dict with tied tensors kept once (under their first name)."""
    out, seen = {}, set()
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.dtype, tuple(t.shape)) if t.numel() else (name,)
        if key not in seen:
            seen.add(key)
            out[name] = t
    return out


def weights_digest(model) -> str:
    """sha256 of every (name, dtype, shape, bytes) of the model's tensors: its exact weights."""
    h = hashlib.sha256()
    for name, t in model_tensors(model).items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def config_spec(model) -> dict:
    """The model config as a dict, without bookkeeping that does not change the computation."""
    cfg = model.config.to_dict()
    drop = {"transformers_version", "architectures", "name_or_path"}
    return {k: v for k, v in cfg.items() if not k.startswith("_") and k not in drop}


def model_spec(model) -> dict:
    return {"config": config_spec(model), "init_weights": weights_digest(model)}


def differing_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted paths at which two JSON-like values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += differing_keys(a.get(k), b.get(k), f"{prefix}{k}.") if k in a and k in b else [f"{prefix}{k}"]
        return out
    return [] if a == b else [prefix.rstrip(".") or "(all)"]


# ------------------------------------------------------------------------------------------- checkpointer


class Checkpointer:
    """Save and restore one training run's state in ``directory`` under the fingerprint of ``spec``."""

    def __init__(self, directory: str | Path, spec: dict):
        self.dir = Path(directory)
        self.spec = json.loads(canonical_json(spec))
        self.fingerprint = fingerprint(self.spec)

    # --------------------------------------------------------------------------------------------- save

    def save(self, model, opt, step: int, history: dict) -> None:
        names = _param_names(model)
        tensors = {f"model/{k}": v.detach().contiguous() for k, v in model_tensors(model).items()}
        tensors["rng/torch"] = torch.get_rng_state()
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        tensors.update({f"rng/cuda{i}": t for i, t in enumerate(cuda)})
        groups, group_params, opt_scalars = [], [], {}
        for group in opt.param_groups:
            groups.append({k: v for k, v in group.items() if k != "params"})
            group_params.append([names[id(p)] for p in group["params"]])
            for p in group["params"]:
                for k, v in opt.state.get(p, {}).items():
                    if torch.is_tensor(v):
                        tensors[f"opt/{names[id(p)]}/{k}"] = v.detach().contiguous()
                    else:
                        opt_scalars.setdefault(names[id(p)], {})[k] = v
        tensor_file = f"state-{step:08d}.safetensors"
        from safetensors.torch import save_file

        with io.atomic_path(self.dir / tensor_file) as tmp:
            save_file({k: v.cpu() for k, v in tensors.items()}, str(tmp))
        io.write_json({"format": FORMAT, "fingerprint": self.fingerprint, "spec": self.spec, "step": int(step),
                       "history": history, "param_groups": groups, "group_params": group_params,
                       "opt_scalars": opt_scalars, "n_cuda_rng": len(cuda), "tensors": tensor_file},
                      self.dir / SCALARS)  # last: the JSON marks the checkpoint complete
        for old in self.dir.glob("state-*.safetensors"):
            if old.name != tensor_file:
                old.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------------ restore

    def restore(self, model, opt) -> tuple[int, dict] | None:
        """Load the checkpoint into ``model``/``opt`` and return (step, history) if it was written under this
        fingerprint; otherwise say why in one line, delete it, and return None (train from scratch)."""
        marker = self.dir / SCALARS
        if not marker.exists():
            if any(self.dir.glob("state-*.safetensors")) or any((self.dir / f).exists() for f in LEGACY):
                self.discard("is incomplete or in an older format")
            return None
        try:
            scalars = io.read_json(marker)
            if scalars.get("format") != FORMAT or "fingerprint" not in scalars:
                self.discard("is in an older format without a fingerprint")
                return None
            if scalars["fingerprint"] != self.fingerprint:
                keys = differing_keys(scalars.get("spec"), self.spec)
                shown = ", ".join(keys[:4]) + (f", +{len(keys) - 4} more" if len(keys) > 4 else "")
                self.discard(f"was written with other settings ({shown or 'fingerprint differs'})")
                return None
            from safetensors.torch import load_file

            tensors = load_file(str(self.dir / scalars["tensors"]))
            problem = _mismatch(model, opt, tensors, scalars)
        except Exception as exc:  # unreadable JSON, truncated safetensors, missing keys: all mean "start over"
            problem = f"is unreadable ({type(exc).__name__}: {str(exc)[:120]})"
        if problem:
            self.discard(problem)
            return None
        _load_into(model, opt, tensors, scalars)
        log.info("checkpoint %s: resuming at step %d", self.dir, scalars["step"])
        return int(scalars["step"]), scalars["history"]

    def discard(self, why: str) -> None:
        """Delete this checkpoint's files (never anything else in the directory), with a one-line message."""
        log.warning("checkpoint %s %s; training from scratch", self.dir, why)
        for f in [*self.dir.glob("state-*.safetensors"), *(self.dir / n for n in (SCALARS, *LEGACY))]:
            f.unlink(missing_ok=True)


def open_checkpoint(directory: str | Path | None, spec: dict, model, opt,
                    history: dict) -> tuple[Checkpointer | None, int, dict]:
    """(checkpointer, first step, history) for a trainer: resumed from ``directory`` when its checkpoint was
    written under ``spec``'s fingerprint, else step 0 and the given empty ``history``. No directory: no
    checkpointing at all (checkpointer None)."""
    if directory is None:
        return None, 0, history
    checkpointer = Checkpointer(directory, spec)
    restored = checkpointer.restore(model, opt)
    return (checkpointer, 0, history) if restored is None else (checkpointer, *restored)


def _param_names(model) -> dict[int, str]:
    return {id(p): n for n, p in model.named_parameters()}


def _mismatch(model, opt, tensors: dict[str, torch.Tensor], scalars: dict) -> str | None:
    """Why the saved tensors cannot be loaded into ``model``/``opt`` exactly, or None."""
    want = {k: tuple(v.shape) for k, v in model_tensors(model).items()}
    have = {k[6:]: tuple(v.shape) for k, v in tensors.items() if k.startswith("model/")}
    if want != have:
        bad = sorted(set(want) ^ set(have)) or [k for k in want if want[k] != have[k]]
        return f"does not match the model's tensors ({', '.join(bad[:3])})"
    names = _param_names(model)
    groups = [[names[id(p)] for p in g["params"]] for g in opt.param_groups]
    if groups != scalars["group_params"]:
        return "does not match the optimizer's parameter groups"
    params = dict(model.named_parameters())
    for key, v in tensors.items():
        if key.startswith("opt/"):
            pname, _, k = key[4:].rpartition("/")
            if pname not in params or (v.dim() and tuple(v.shape) != tuple(params[pname].shape)):
                return f"has optimizer state {key} that does not fit the model"
    if "rng/torch" not in tensors:
        return "has no RNG state"
    return None


def _load_into(model, opt, tensors: dict[str, torch.Tensor], scalars: dict) -> None:
    weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
    with torch.no_grad():  # copy in place: ties between parameters survive
        for name, t in model_tensors(model).items():
            t.copy_(weights[name])
    names = _param_names(model)
    for group, saved in zip(opt.param_groups, scalars["param_groups"]):
        group.update({k: (tuple(v) if isinstance(group.get(k), tuple) else v) for k, v in saved.items()})
        for p in group["params"]:
            prefix = f"opt/{names[id(p)]}/"
            state = {k[len(prefix):]: (v if k.endswith("/step") else v.to(p.device))
                     for k, v in tensors.items() if k.startswith(prefix)}
            state.update(scalars["opt_scalars"].get(names[id(p)], {}))
            if state:
                opt.state[p] = state
    torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[f"rng/cuda{i}"] for i in range(scalars["n_cuda_rng"])]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
