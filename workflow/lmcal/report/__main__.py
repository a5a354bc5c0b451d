"""``python -m lmcal.report splice``: put the generated results section into README.md.

``python -m lmcal.report compare A.json B.json ...``: which claims of two or more runs of one study (summaries,
e.g. ``--config seed=0`` and ``seed=1``) held with the same verdict; prints a Markdown table, ``--out`` saves JSON.

Copies the snapshots the ``results_section`` rule wrote (results/report/snapshot/<study>.json) to docs/results/,
renders the section from them (``--wall-minutes`` adds the run's wall time to the machine line) and replaces the
text between README's results markers; then checks that every number in it is in the snapshot it cites.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lmcal.report.machine import describe
from lmcal.report.results import check_section, render_comparison, render_section, splice


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lmcal.report", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("splice", help="copy snapshots to docs/results and splice the section into README.md")
    sp.add_argument("--snapshots", default="results/report/snapshot", help="the rule's snapshot folder")
    sp.add_argument("--readme", default="README.md")
    sp.add_argument("--docs", default="docs/results", help="where the committed snapshots live")
    sp.add_argument("--wall-minutes", type=float, default=None, help="wall time of the measured run")
    ck = sub.add_parser("check", help="check README's results section against docs/results (exit 1 on problems)")
    ck.add_argument("--readme", default="README.md")
    cp = sub.add_parser("compare", help="which claims held across runs of one study (summary.json files)")
    cp.add_argument("summaries", nargs="+", help="summary.json of each run (label = file name unless --labels)")
    cp.add_argument("--labels", nargs="*", default=None, help="one label per summary (e.g. seed=0 seed=1)")
    cp.add_argument("--out", default=None, help="write the comparison as JSON here")
    args = ap.parse_args(argv)
    if args.command == "compare":
        return compare(args.summaries, args.labels, args.out)
    readme = Path(args.readme)
    root = readme.resolve().parent
    if args.command == "splice":
        files = sorted(Path(args.snapshots).glob("*.json"))
        if not files:
            raise SystemExit(f"--snapshots {args.snapshots}: no <study>.json (build results/report/results.md first)")
        snaps = {}
        for f in files:
            snap = json.loads(f.read_text())
            if args.wall_minutes is not None:
                snap["machine"]["wall_minutes"] = round(args.wall_minutes, 1)
            snaps[f.stem] = snap
        docs = root / args.docs if not Path(args.docs).is_absolute() else Path(args.docs)
        docs.mkdir(parents=True, exist_ok=True)
        for study, snap in snaps.items():
            (docs / f"{study}.json").write_text(json.dumps(snap, indent=1, sort_keys=True) + "\n")
        section = render_section(snaps, describe)
        for f in sorted(docs.glob("*_reseed.json")):  # written by `compare --out`, kept between splices
            section += "\n" + render_comparison(f.stem, json.loads(f.read_text()))
        readme.write_text(splice(readme.read_text(), section))
    problems = check_section(readme.read_text(), root)
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


def compare(paths: list[str], labels: list[str] | None, out: str | None) -> int:
    from lmcal.core.claims import compare_claims
    from lmcal.core.io import write_json

    labels = labels or [str(p) for p in paths]
    if len(labels) != len(paths):
        raise SystemExit(f"--labels: expected {len(paths)} labels (one per summary), got {len(labels)}")
    runs = {}
    for label, path in zip(labels, paths):
        summary = json.loads(Path(path).read_text())
        if "claims" not in summary:
            raise SystemExit(f"{path}: no 'claims' in this summary (is it a study summary.json?)")
        runs[label] = summary["claims"]
    rows = compare_claims(runs)
    print("| claim | " + " | ".join(labels) + " | held |")
    print("|---" * (len(labels) + 2) + "|")
    for r in rows:
        cells = [f"{v} ({a})" if a else str(v) for v, a in zip(r["verdicts"], r["seeds_agree"])]
        print(f"| {r['claim']} | " + " | ".join(cells) + f" | {'yes' if r['held'] else 'no'} |")
    n_held = sum(r["held"] for r in rows)
    print(f"\n{n_held} of {len(rows)} claims held with the same verdict in all {len(labels)} runs.")
    if out:
        write_json({"labels": labels, "runs": dict(zip(labels, paths)), "claims": rows, "n_held": n_held, "n_claims": len(rows)}, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
