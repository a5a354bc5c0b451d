"""A study's summary tables as one self-contained HTML page, for Snakemake's report.

The report shows HTML (and images) inline but offers parquet and JSON only as downloads, so each summary job
writes its main tables here as well; the parquet files stay the tables of record.
"""

from __future__ import annotations

import html
import os
from typing import TYPE_CHECKING, Mapping

from lmcal.core import io

if TYPE_CHECKING:
    import pandas as pd

MAX_ROWS = 500  # a paper-scale table stays readable; the page says when rows were left out
_STYLE = (
    "body{font-family:sans-serif;font-size:13px;margin:1em}"
    "table{border-collapse:collapse;margin-bottom:1.5em}"
    "th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    "th{background:#eee}caption{text-align:left;font-weight:bold;padding:4px 0}"
)


def table_html(name: str, table: pd.DataFrame, max_rows: int = MAX_ROWS) -> str:
    """One <table> with ``name`` as caption; rows beyond ``max_rows`` are left out and counted in the caption."""
    shown = table.head(max_rows)
    caption = html.escape(name)
    if len(table) > max_rows:
        caption += f" (first {max_rows} of {len(table)} rows)"
    # 4 significant digits for floats (losses, errors, exponents); integers stay exact
    body = shown.to_html(index=False, escape=True, border=0, na_rep="", float_format=lambda v: f"{v:.4g}")
    # pandas puts no caption in to_html; insert it right after the opening tag
    start = body.index(">") + 1
    return body[:start] + f"<caption>{caption}</caption>" + body[start:]


def tables_page(title: str, tables: Mapping[str, pd.DataFrame], note: str = "") -> str:
    """A whole HTML page: ``title``, an optional ``note`` paragraph, then one table per entry of ``tables``."""
    if not tables:
        raise ValueError(f"tables_page({title!r}): no tables given")
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h2>{html.escape(title)}</h2>"]
    if note:
        parts.append(f"<p>{html.escape(note)}</p>")
    for name, table in tables.items():
        parts.append(table_html(name, table) if len(table) else
                     f"<p><b>{html.escape(name)}</b>: empty (this config computes none)</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_tables_html(title: str, tables: Mapping[str, pd.DataFrame], path: str | os.PathLike,
                      note: str = "") -> None:
    """Write :func:`tables_page` to ``path`` atomically."""
    io.write_text(tables_page(title, tables, note), path)
