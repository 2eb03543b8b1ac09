"""Chart of a ceiling run (``make ceiling``): one PNG from its summary.json.

Three panels: saturated reviews/s per variant against the model's batched (and batch-1)
in-process ceiling; efficiency (reviews/s ÷ batched ceiling); open-loop latency p50/p99 at half
the saturated rate (log scale). Reads only the summary, so ``python -m analysis.ceiling_chart
RUN_DIR`` redraws it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REST, STREAM = "#1f77b4", "#ff7f0e"


def plot_ceiling(summary: Mapping[str, Any], path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    c = summary["ceiling"]
    names = list(summary["variants"])
    vs = [summary["variants"][n] for n in names]
    labels = [v.get("label") or n for n, v in zip(names, vs)]
    colors = [REST if (v.get("mode") or n.split("/")[0]) == "rest" else STREAM
              for n, v in zip(names, vs)]
    x = range(len(names))
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(15, 4.8))

    rps = [v.get("reviews_per_s") or 0 for v in vs]
    bars = a1.bar(x, rps, color=colors)
    a1.axhline(c["batched_reviews_per_s"], color="k", ls="--", lw=1,
               label=f"ceiling, batched ({c['batched_reviews_per_s']:,.0f})")
    a1.axhline(c["batch1_reviews_per_s"], color="grey", ls=":", lw=1,
               label=f"ceiling, batch 1 ({c['batch1_reviews_per_s']:,.0f})")
    for b, r, v in zip(bars, rps, vs):
        mark = "" if v.get("service_bound") is not False else "\n(driver/broker bound)"
        a1.annotate(f"{r:,.0f}{mark}", (b.get_x() + b.get_width() / 2, r), ha="center",
                    va="bottom", fontsize=8)
    a1.set_title("Saturated throughput")
    a1.set_ylabel("reviews/s (ok, measured window)")
    a1.legend(fontsize=8, loc="upper left")
    a1.set_ylim(0, max([*rps, c["batched_reviews_per_s"]]) * 1.25)

    eff = [v.get("efficiency") or 0 for v in vs]
    bars = a2.bar(x, eff, color=colors)
    a2.axhline(1.0, color="k", ls="--", lw=1)
    for b, e in zip(bars, eff):
        a2.annotate(f"{e:.2f}", (b.get_x() + b.get_width() / 2, e), ha="center", va="bottom",
                    fontsize=8)
    a2.set_ylim(0, 1.15)
    a2.set_title("Efficiency = reviews/s ÷ batched ceiling")

    w = 0.38
    p50 = [(v.get("latency_ms") or {}).get("p50") for v in vs]
    p99 = [(v.get("latency_ms") or {}).get("p99") for v in vs]
    a3.bar([i - w / 2 for i in x], [p or 0 for p in p50], w, color=colors, alpha=0.55,
           label="p50")
    a3.bar([i + w / 2 for i in x], [p or 0 for p in p99], w, color=colors, label="p99")
    for i, (a, b) in enumerate(zip(p50, p99)):
        for dx, val in ((-w / 2, a), (w / 2, b)):
            if val:
                a3.annotate(f"{val:.1f}", (i + dx, val), ha="center", va="bottom", fontsize=7)
    if any(p for p in p50 + p99):
        a3.set_yscale("log")
    a3.set_title("Latency at half the saturated rate (open loop)")
    a3.set_ylabel("ms (light = p50, dark = p99)")

    for ax in (a1, a2, a3):
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels, rotation=15, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Serving variants vs the model ceiling ({summary.get('run_id') or ''})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m analysis.ceiling_chart RUN_DIR", file=sys.stderr)
        return 2
    run = Path(argv[0])
    out = plot_ceiling(json.loads((run / "summary.json").read_text()),
                       run / "charts" / "ceiling.png")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
