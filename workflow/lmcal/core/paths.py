"""Path templates and key parsers shared by rules and studies (``key~value`` path segments).
"""

from __future__ import annotations

import re
from pathlib import Path

# ------------------------------------------------------------------------------------------ workflow steps

_KEY_RE = re.compile(r"data~(?P<dataset>[^/]+?)(?:/decode~(?P<decode>[^/]+?))?\.(?:parquet|json)$")


def output_key(path: str | Path) -> tuple[str, ...]:
    """``(dataset,)`` or ``(dataset, decode)`` from a ``.../data~{dataset}[/decode~{decode}].parquet`` path."""
    m = _KEY_RE.search(Path(path).as_posix())
    if not m:
        raise ValueError(f"path {path!r} does not end in data~<dataset>[/decode~<decode>].parquet")
    return (m["dataset"],) if m["decode"] is None else (m["dataset"], m["decode"])


_RUN_KEY = re.compile(r"model~(?P<model>[^/]+)/data~(?P<dataset>[^/]+)/decode~(?P<decode>[^/]+)\.[a-z]+$")


def run_key(path: str) -> dict[str, str]:
    """{model, dataset, decode} of a ``.../model~M/data~D/decode~K.ext`` path (the study's path convention)."""
    match = _RUN_KEY.search(str(path).replace("\\", "/"))
    if match is None:
        raise ValueError(f"path {path!r} does not follow model~<m>/data~<d>/decode~<k>.<ext>")
    return match.groupdict()


def fmt_num(x: float) -> str:
    """Compact, filename-safe number: 0.1 -> '0.1', 2e-05 -> '2e-05', 64.0 -> '64'."""
    return f"{float(x):g}"
