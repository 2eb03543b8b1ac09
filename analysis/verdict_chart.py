"""The verdict's chart, from a verdict summary.json alone.

Left: successful reviews/s against the offered load relative to each deployment's own capacity
(open-loop steps up to about 1×, the article's batch-and-retry load past it), a band per
deployment (95 % bootstrap interval over time windows) and its saturated rate dotted. Right: the
cost axis: the cores each deployment needs for the plan's target rate within the SLO, split into
workers, the N−1 rule's spare core and the broker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .charts import COLORS, DPI, LABELS


def fig_verdict(summary: Mapping[str, Any]) -> Figure | None:
    v = summary.get("verdict") or {}
    cap = v.get("capacity") or {}
    if not cap:
        return None
    fig = Figure(figsize=(13, 4.8), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    a_thr, a_cost = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2.2, 1]})
    for mode, c in cap.items():
        pts = sorted((p for p in c["points"] if p["phase"] != "saturated"),
                     key=lambda p: p["load"])
        x = [p["load"] for p in pts]
        y = [p["reviews_per_s"] or 0.0 for p in pts]
        lo = [p["ci95"][0] if p["ci95"][0] is not None else yy for p, yy in zip(pts, y)]
        hi = [p["ci95"][1] if p["ci95"][1] is not None else yy for p, yy in zip(pts, y)]
        col = COLORS[mode]
        a_thr.fill_between(x, lo, hi, color=col, alpha=0.2, lw=0)
        # solid: the open-loop steps; dashed: on to the batch-and-retry load (another loop)
        k = sum(1 for p in pts if p["phase"] == "open")
        a_thr.plot(x[:k], y[:k], color=col, marker="o", lw=2, label=f"{LABELS[mode]}")
        a_thr.plot(x[max(0, k - 1):], y[max(0, k - 1):], color=col, marker="o", lw=2, ls="--")
        over = [p for p in pts if p["phase"] == "overload"]
        for p in over:
            a_thr.annotate(f"{100 * (p['error_rate'] or 0):.1f} % failed\n"
                           f"{p['retry_amplification'] or 0:.2f} attempts/req",
                           (p["load"], p["reviews_per_s"] or 0), textcoords="offset points",
                           xytext=(6, 6), fontsize=7, color=col)
        a_thr.axhline(c["saturated_reviews_per_s"], color=col, ls=":", lw=1,
                      label=f"{LABELS[mode]} saturated ({c['saturated_reviews_per_s']:,.0f}/s)")
        if c.get("slo_reviews_per_s") and c.get("slo_load"):
            a_thr.plot([c["slo_load"]], [c["slo_reviews_per_s"]], marker="*", ms=13, color=col,
                       ls="none")
    a_thr.axvline(1.0, color="#777777", lw=0.8, ls="--")
    a_thr.set_xlabel("offered load ÷ the deployment's own capacity  (solid: open-loop rate; "
                     "dashed: batch-and-retry clients ÷ the clients that fill the timeout)",
                     fontsize=8)
    a_thr.set_ylabel("successful reviews / s")
    a_thr.set_ylim(bottom=0)
    a_thr.set_xlim(left=0)
    slo = (v.get("slo") or {}).get("p99_ms")
    a_thr.set_title("Successful throughput by load (band: 95 % interval; ★ highest rate within "
                    + (f"p99 ≤ {slo:,.0f} ms" if slo else "the SLO") + ")", fontsize=10)
    a_thr.grid(True, alpha=0.3)
    a_thr.legend(fontsize=8, loc="best")

    plan = v.get("plan") or {}
    modes = [m for m in plan.get("modes") or {}]
    workers = [(plan["modes"][m].get("service_cores") or 0) - 1 if plan["modes"][m].get(
        "service_cores") else 0 for m in modes]
    spare = [1 if plan["modes"][m].get("service_cores") else 0 for m in modes]
    broker = [plan["modes"][m].get("broker_cores") or 0 for m in modes]
    names = [LABELS[m] for m in modes]
    a_cost.bar(names, workers, color=[COLORS[m] for m in modes], label="worker cores")
    a_cost.bar(names, spare, bottom=workers, color="#bbbbbb", label="spare core (N−1)")
    a_cost.bar(names, broker, bottom=[w + s for w, s in zip(workers, spare)], color="#555555",
               label="broker cores")
    for i, m in enumerate(modes):
        total = plan["modes"][m].get("total_cores")
        a_cost.annotate("no plan" if not total else f"{total} cores", (i, workers[i] + spare[i]
                        + broker[i]), ha="center", va="bottom", fontsize=9)
    target = plan.get("target_reviews_per_s")
    a_cost.set_title(f"Cost: cores for {target:,.0f} reviews/s" if target else "Cost: cores",
                     fontsize=10)
    a_cost.set_ylabel("cores")
    tallest = max([w + sp + b for w, sp, b in zip(workers, spare, broker)] or [1])
    a_cost.set_ylim(0, max(1, tallest) * 1.45)     # room for the labels and the legend
    a_cost.legend(fontsize=7, loc="upper right")
    a_cost.grid(True, axis="y", alpha=0.3)
    m = summary.get("machine") or {}
    fig.suptitle("Which should I use? " + " vs ".join(LABELS[k] for k in cap), fontsize=12)
    fig.get_layout_engine().set(rect=(0, 0.04, 1, 0.96))
    fig.text(0.01, 0.008, f"run {summary.get('run_id')} · {m.get('cpu_model', '?')}, "
                          f"{m.get('cpus', '?')} cores · service pinned to one core, one worker",
             fontsize=7, color="#555555", ha="left", va="bottom")
    return fig
