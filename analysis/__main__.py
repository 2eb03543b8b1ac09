"""``python -m analysis {report,summary,compare} ...`` — the analysis stage's command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _report(args: argparse.Namespace) -> int:
    from .report import build_report
    from .summary import status_line
    from .verdict_run import build_verdict_report, is_verdict

    if is_verdict(args.run_dir):   # a make verdict folder: its own summary, chart and report
        v = build_verdict_report(args.run_dir, args.out, target_reviews_per_s=args.target_rate,
                                 slo_p99_ms=args.slo_p99_ms)
        print(f"report:  {v.report}")
        print(f"summary: {v.summary_json}  {v.summary_md}")
        print(f"chart:   {v.chart}")
        print(v.summary_md.read_text(), end="")
        return 0

    files = build_report(args.run_dir, args.out)
    print(f"report:  {files.report}")
    print(f"summary: {files.summary_json}  {files.summary_md}")
    print(f"charts:  {len(files.charts)} PNG in {files.report.parent / 'charts'}")
    print(f"status:  {status_line(files.summary)}")
    return 0


def _summary(args: argparse.Namespace) -> int:
    from .rundir import load_run
    from .summary import analyse, write_summary

    _, md, _ = write_summary(analyse(load_run(args.run_dir)), args.out)
    print(md.read_text(), end="")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .compare import parse_thresholds, run_compare

    code, table, _ = run_compare(args.base, args.head, thresholds=parse_thresholds(args.threshold),
                                 gates=args.gate, alpha=args.alpha, markdown=args.markdown)
    print(table)
    return code


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("report", help="write report.html, summary.json/.md and charts/ into a run folder")
    r.add_argument("run_dir", type=Path)
    r.add_argument("--out", type=Path, default=None, help="write there instead of the run folder")
    r.add_argument("--target-rate", type=float, default=None,
                   help="a verdict folder: plan for this many reviews/s instead of the run's")
    r.add_argument("--slo-p99-ms", type=float, default=None,
                   help="a verdict folder: judge the steps and plan against this p99 instead")
    r.set_defaults(func=_report)

    s = sub.add_parser("summary", help="write summary.json/.md only and print the Markdown table")
    s.add_argument("run_dir", type=Path)
    s.add_argument("--out", type=Path, default=None)
    s.set_defaults(func=_summary)

    c = sub.add_parser("compare", help="exit 1 if HEAD significantly regressed against BASE")
    c.add_argument("base", type=Path, help="run folder or summary.json")
    c.add_argument("head", type=Path, help="run folder or summary.json")
    c.add_argument("--threshold", action="append", metavar="METRIC=FRACTION",
                   help="relative threshold, e.g. ratios.successful_throughput=0.1 or efficiency=0.15 "
                        "(a suffix matches every metric ending with it); repeatable")
    c.add_argument("--gate", action="append", metavar="METRIC",
                   help="also let this informational metric fail the run, e.g. latency_ms.p99")
    c.add_argument("--alpha", type=float, default=0.01, help="significance level (default 0.01)")
    c.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    c.set_defaults(func=_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"analysis {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
