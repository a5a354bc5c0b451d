"""Checks of a built `snakemake --report report.html` against the workdir it was built from (used by the e2e test)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

STUDY_FILES = ("summary.json", "tables.html")  # besides its figures, each study reports these two


def report_results(html: str) -> dict[str, dict]:
    """The report's table of results (path -> name, caption, mime type, data URI), a JSON object in a script."""
    start = html.index("var results = ", html.index('<script id="results">')) + len("var results = ")
    results, _ = json.JSONDecoder().raw_decode(html[start:])
    return results


def expected_results(workdir: Path, studies: list[str]) -> list[str]:
    """Every figure each study wrote under results/<study>/, plus its summary.json and tables.html."""
    results = workdir / "results"
    paths = [results / s / name for s in studies for name in STUDY_FILES]
    paths += [p for s in studies for p in (results / s).rglob("*.png")]
    return sorted(str(p.relative_to(workdir)) for p in paths)


def report_problems(workdir: Path, report: Path, studies: list[str]) -> list[str]:
    """Everything wrong with ``report``: external resources, results missing or not embedded, bad captions."""
    html = report.read_text(encoding="utf-8")
    problems = [f"external resource: {tag[:120]}" for tag in
                re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=[\"']?https?://[^>]*>", html)]
    results = report_results(html)
    expected = expected_results(workdir, studies)
    if not any(p.endswith(".png") for p in expected):
        problems.append("no figures under results/: nothing to check")
    for rel in expected:
        path = workdir / rel
        if not path.is_file():
            problems.append(f"missing result file {rel}")
        elif rel not in results:
            problems.append(f"not in the report: {rel}")
        elif not results[rel]["data_uri"].endswith(base64.b64encode(path.read_bytes()).decode()):
            problems.append(f"embedded bytes differ from the file: {rel}")
    for rel, entry in results.items():
        caption = entry["caption"]
        if len(re.sub(r"<[^>]+>", "", caption).split()) < 15:
            problems.append(f"caption of {rel} is missing or too short to say what it shows: {caption!r}")
        for marker in ("{{", "{%", "system-message", "Unknown target name"):
            if marker in caption:
                problems.append(f"caption of {rel} not fully rendered ({marker!r})")
    return problems
