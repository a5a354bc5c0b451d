"""The Snakemake report's parts that need no run: the HTML tables and the caption files the rules point at.
(The report itself is built and checked on the tiny run in test_workflow_e2e.py, via report_checks.py.)"""

import re
from html.parser import HTMLParser

import pandas as pd
import pytest
from lmcal.core import report_tables
from workflow_utils import REPO

RULES = sorted((REPO / "workflow" / "rules").glob("*.smk"))
REPORT_DIR = REPO / "workflow" / "report"


class _Cells(HTMLParser):
    """Collects the text of every <caption>, <th> and <td>, in order."""

    def __init__(self):
        super().__init__()
        self.cells, self._tag = [], None

    def handle_starttag(self, tag, attrs):
        self._tag = tag if tag in {"caption", "th", "td"} else None

    def handle_data(self, data):
        if self._tag:
            self.cells.append((self._tag, data.strip()))
            self._tag = None


def _cells(html):
    parser = _Cells()
    parser.feed(html)
    return parser.cells


def test_table_page_holds_every_value_with_floats_at_4_significant_digits(tmp_path):
    table = pd.DataFrame({"model": ["a<b", "c"], "loss": [1.234567, 1e-7], "n": [3, 12345678]})
    path = tmp_path / "t.html"
    report_tables.write_tables_html("Ladder", {"ladder.parquet": table}, path, note="from model_info.json")
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and "from model_info.json" in text
    assert _cells(text) == [("caption", "ladder.parquet"), ("th", "model"), ("th", "loss"), ("th", "n"),
                            ("td", "a<b"), ("td", "1.235"), ("td", "3"),
                            ("td", "c"), ("td", "1e-07"), ("td", "12345678")]
    assert "a&lt;b" in text  # escaped, so a value cannot break the page


def test_long_tables_are_cut_and_say_so():
    table = pd.DataFrame({"i": range(report_tables.MAX_ROWS + 7)})
    cells = _cells(report_tables.table_html("big", table))
    assert cells[0] == ("caption", f"big (first {report_tables.MAX_ROWS} of {report_tables.MAX_ROWS + 7} rows)")
    assert [c for _, c in cells[2:]] == [str(i) for i in range(report_tables.MAX_ROWS)]


def test_empty_tables_are_named_and_no_tables_is_an_error():
    page = report_tables.tables_page("SFT", {"vd_table.parquet": pd.DataFrame()})
    assert "vd_table.parquet</b>: empty" in page
    with pytest.raises(ValueError, match="no tables"):
        report_tables.tables_page("SFT", {})


def _captions_by_rule_file():
    return {rule: re.findall(r'caption="([^"]+)"', rule.read_text()) for rule in RULES}


def test_every_caption_a_rule_names_exists_and_every_caption_file_is_used():
    named = {(rule.parent / c).resolve() for rule, caps in _captions_by_rule_file().items() for c in caps}
    assert named, "no report() captions in workflow/rules"
    missing = sorted(str(p) for p in named if not p.is_file())
    assert not missing, f"captions named by report() but absent: {missing}"
    unused = sorted(p.name for p in REPORT_DIR.glob("*.rst") if p.resolve() not in named)
    assert unused == ["workflow.rst"], f"caption files no rule uses: {unused}"
    assert 'report: "workflow/report/workflow.rst"' in (REPO / "Snakefile").read_text()


def test_every_summary_and_figure_output_of_the_study_rules_is_in_the_report():
    # outputs a reader looks at (figures, summary.json, the HTML tables) must carry report(); parquet need not
    unflagged = []
    for rule in RULES:
        for line in rule.read_text().splitlines():
            m = re.match(r'\s+\w+="(results/[^"]+\.(?:png|html)|results/\w+/summary\.json)",?$', line)
            if m:
                unflagged.append(f"{rule.name}: {m.group(1)}")
    assert not unflagged, f"outputs without report(): {unflagged}"
