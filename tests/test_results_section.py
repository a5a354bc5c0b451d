"""README results section (lmcal.report): machine facts, rendering, splice, snapshots and the number check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lmcal.core.claims import claim
from lmcal.report.__main__ import main
from lmcal.report.machine import cpu_facts, describe, machine_info
from lmcal.report.results import BEGIN, END, check_section, fmt, render_section, section_of, snapshot, splice

ROOT = Path(__file__).resolve().parents[1]
MACHINE = {"cpu": "Test CPU 8480+", "isa": "AVX-512", "cores": 2, "torch": "2.5.1", "date": "2026-12-01",
           "wall_minutes": None}
SUMMARY = {"claims": [
    claim("emergence.jump.add1-scratchpad", "add1-scratchpad: exact match jumps", 0.12345, ci=[0.05, 0.2],
          interval="min-max over 3 seeds", rule="jump if EM rises >= 0.1 and its early share < 0.5 x ...",
          verdict=True, seed_verdicts=[True, True, False]),
    claim("emergence.threshold.add1-scratchpad", "threshold size", 55536.0, ci=[25248.0, 100672.0],
          interval="min-max over 3 seeds", rule="smallest N with EM >= 0.5", verdict=True,
          seed_verdicts=[True, False, True]),
]}
SUMMARY["headline_components"] = ["add1-scratchpad"]
SUMMARY["seed_table"] = {c: [{"size": "h48", "n_params": 55536, "n_seeds": 3, "exact_match": [0.687, 0.06, 1.0],
                              "norm_edit_distance": [0.1, 0.0, 0.3], "target_logprob": [-1.234, -2.5, -0.75]}]
                         for c in ("add1-scratchpad", "add2-direct")}


def _readme(tmp_path: Path) -> Path:
    snap = snapshot("emergence", SUMMARY, MACHINE, "results/emergence/summary.json")
    (tmp_path / "snap").mkdir()
    (tmp_path / "snap" / "emergence.json").write_text(json.dumps(snap))
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title 1\n\nintro 42\n\n{BEGIN}\n{END}\n\n## Configuration 7\n")
    assert main(["splice", "--snapshots", str(tmp_path / "snap"), "--readme", str(readme)]) == 0
    return readme


def test_cpu_facts_name_the_instruction_set():
    text = "processor: 0\nmodel name\t: Intel Xeon X\nflags\t\t: fpu sse2 avx avx2 avx512f\nmodel name: other\n"
    assert cpu_facts(text) == {"cpu": "Intel Xeon X", "isa": "AVX-512"}
    assert cpu_facts(text.replace(" avx512f", ""))["isa"] == "AVX2"
    assert cpu_facts("model name: Y\nflags: sse2\n")["isa"] is None
    m = machine_info(wall_minutes=17.04, date="2026-01-02")
    assert m["cores"] >= 1 and m["wall_minutes"] == 17.0 and m["date"] == "2026-01-02"
    assert "17.0 min wall" in describe(m) and "2026-01-02" in describe(m)


def test_splice_writes_snapshot_and_section_and_keeps_the_rest(tmp_path):
    readme = _readme(tmp_path)
    text = readme.read_text()
    assert text.startswith("# Title 1\n\nintro 42\n\n") and text.endswith(f"{END}\n\n## Configuration 7\n")
    sec = section_of(text)
    assert "`docs/results/emergence.json`" in sec and "AVX-512" in sec and "2/3" in sec
    assert fmt(0.12345) in sec and "55536" in sec and "[0.05, 0.2] (min-max over 3 seeds)" in sec
    assert sec.count("| R1 |") == 1 and "- R2: smallest N with EM >= 0.5" in sec  # each rule written once
    # the seed table of the headline component only: mean [min, max] over seeds
    assert "Seed table, add1-scratchpad" in sec and "add2-direct" not in sec
    assert "| h48 | 55536 | 3 | 0.687 [0.06, 1] |" in sec and "-1.23 [-2.5, -0.75]" in sec
    snap = json.loads((tmp_path / "docs/results/emergence.json").read_text())
    assert snap["claims"] == SUMMARY["claims"] and snap["machine"]["isa"] == "AVX-512"
    assert list(snap["seed_table"]) == ["add1-scratchpad"]
    assert check_section(text, tmp_path) == []
    # splicing again replaces the section instead of appending a second one
    main(["splice", "--snapshots", str(tmp_path / "snap"), "--readme", str(readme), "--wall-minutes", "17.3"])
    again = readme.read_text()
    assert again.count(BEGIN) == 1 and "17.3 min wall" in again and check_section(again, tmp_path) == []


def test_check_catches_hand_edited_and_uncited_numbers(tmp_path):
    readme = _readme(tmp_path)
    text = readme.read_text()
    edited = text.replace(fmt(0.12345), "0.135")
    assert check_section(edited, tmp_path) == ["docs/results/emergence.json: number 0.135 is not in the snapshot"]
    assert main(["check", "--readme", str(readme)]) == 0
    assert check_section(text.replace("0.687 [", "0.688 ["), tmp_path) == [
        "docs/results/emergence.json: number 0.688 is not in the snapshot"]
    readme.write_text(edited)
    assert main(["check", "--readme", str(readme)]) == 1
    uncited = splice(text, "The model reaches 0.99.\n")
    assert check_section(uncited, tmp_path)[0].startswith("numbers before the first")
    (tmp_path / "docs/results/emergence.json").unlink()
    assert check_section(text, tmp_path) == ["docs/results/emergence.json: cited snapshot does not exist"]


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="exactly one"):
        splice("no markers here", "x")
    with pytest.raises(ValueError, match="has no 'claims'"):
        snapshot("sft", {"table": []}, MACHINE, "results/sft/summary.json")
    assert render_section({}, describe).startswith("<!-- generated")


def test_readme_results_section_matches_its_snapshots():
    """The committed README: one marker pair, every number in the section is in docs/results/<study>.json."""
    readme = (ROOT / "README.md").read_text()
    assert check_section(readme, ROOT) == []


def test_compare_says_which_claims_held_across_reseeds(tmp_path, capsys):
    from lmcal.core.claims import compare_claims

    rule = "r"
    a = [claim("x.jump", "X jumps", 0.1, rule=rule, verdict=True, seed_verdicts=[True, True, False]),
         claim("x.smooth", "X smooth", 0.4, rule=rule, verdict=False),
         claim("x.only_a", "only in a", 1.0, rule=rule, verdict=True)]
    b = [claim("x.jump", "X jumps", 0.2, rule=rule, verdict=True, seed_verdicts=[True, True, True]),
         claim("x.smooth", "X smooth", 0.5, rule=rule, verdict=True),
         claim("x.none", "no verdict", None, rule=rule, verdict=None)]
    rows = {r["id"]: r for r in compare_claims({"s0": a, "s1": b})}
    assert rows["x.jump"]["held"] and rows["x.jump"]["seeds_agree"] == ["2/3", "3/3"]
    assert not rows["x.smooth"]["held"] and rows["x.smooth"]["verdicts"] == [False, True]
    assert not rows["x.only_a"]["held"] and rows["x.only_a"]["verdicts"] == [True, None]
    assert not rows["x.none"]["held"]  # a claim without a verdict never "holds"
    with pytest.raises(ValueError, match="two runs"):
        compare_claims({"s0": a})
    fa, fb = tmp_path / "a.json", tmp_path / "b.json"
    fa.write_text(json.dumps({"claims": a}))
    fb.write_text(json.dumps({"claims": b}))
    assert main(["compare", str(fa), str(fb), "--labels", "seed=0", "seed=1", "--out", str(tmp_path / "c.json")]) == 0
    out = json.loads((tmp_path / "c.json").read_text())
    assert out["n_held"] == 1 and out["n_claims"] == 4
    assert "1 of 4 claims held" in capsys.readouterr().out
    # the comparison renders into the section with only numbers its file holds
    from lmcal.report.results import render_comparison

    block = render_comparison("x_reseed", out)
    readme = f"{BEGIN}\n{block.replace('docs/results/x_reseed.json', 'c.json')}{END}\n"
    assert "| X jumps | yes (2/3) | yes (3/3) | yes |" in block
    assert check_section(readme.replace("`c.json`", "`docs/results/x_reseed.json`"), tmp_path) != []  # missing file
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "c.json").rename(tmp_path / "docs" / "results" / "x_reseed.json")
    fixed = readme.replace("`c.json`", "`docs/results/x_reseed.json`")
    assert check_section(fixed, tmp_path) == []
    assert check_section(fixed.replace("1 of 4", "7 of 4"), tmp_path) != []
