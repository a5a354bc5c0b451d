"""Atomic writers for every file the workflow produces.

A job killed mid-write must never leave a half-written output that Snakemake (or a resume) mistakes for a
finished one, so everything goes to a temporary sibling first and is renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:  # pandas is imported where a table is read or written: this module is parse-time light
    import pandas as pd


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), so other threads never run
    with a zero umask; elsewhere set-and-restore."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _chmod_as_created(path: Path, base: int) -> None:
    """mkstemp/mkdtemp create 0600/0700 whatever the umask; give the result the mode a plain open()/mkdir()
    would (0666/0777 less the umask), so a group-readable umask shares results on a cluster."""
    os.chmod(path, base & ~current_umask())


def _chmod_tree(root: Path) -> None:
    """Directories 0777 and files 0666, less the umask, for ``root`` and everything in it (model files written
    by safetensors are 0600 otherwise)."""
    _chmod_as_created(root, 0o777)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            _chmod_as_created(Path(dirpath) / d, 0o777)
        for f in filenames:
            _chmod_as_created(Path(dirpath) / f, 0o666)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        _chmod_as_created(tmp, 0o666)  # after the writer: some (safetensors) replace tmp with their own 0600 file
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _chmod_tree(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def jsonable(obj: Any) -> Any:
    """Strict-JSON copy of ``obj``: the one cleaner every JSON output goes through.

    NumPy (and torch) scalars and arrays become Python values, paths and other keys become strings, NaN becomes
    null, and ±inf become the strings ``"inf"`` / ``"-inf"`` (an infinite value, such as the optimal logit gap at
    β = 0, is information; ``float("inf")`` reads it back).
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy/torch scalars and arrays
        return jsonable(obj.tolist())
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
    return obj


def write_json(obj: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def read_parquet(path: str | os.PathLike) -> pd.DataFrame:
    import pandas as pd

    return pd.read_parquet(path)


def save_figure(fig, path: str | os.PathLike, dpi: int = 150) -> None:
    """Save a matplotlib figure as PNG atomically (the caller still owns ``fig``)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
