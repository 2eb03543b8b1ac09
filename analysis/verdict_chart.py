"""The verdict's chart, from a verdict summary.json alone.

Left: successful reviews/s against the offered load relative to each deployment's own capacity
(open-loop steps up to about 1×, the article's batch-and-retry load past it), a band per
deployment (95 % bootstrap interval over time windows) and its saturated rate dotted. Right: the
cost axis: the cores each deployment needs for the plan's target rate within the SLO, split into
workers, the N−1 rule's spare core and the broker.

Along a synthetic cost axis (``make verdict COST_US=...``), :func:`fig_cost_axis`: per regime, the
stream's advantage over REST at each cost per input, both axes log, the 1.0 line where the winner
changes.
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
    syn = summary.get("synthetic") or {}
    fig.text(0.01, 0.008, f"run {summary.get('run_id')} · {m.get('cpu_model', '?')}, "
                          f"{m.get('cpus', '?')} cores · service pinned to one core, one worker"
             + (f" · SYNTHETIC model cost +{syn['cost_us']:g} µs of CPU per input"
                if syn.get("cost_us") is not None else ""),
             fontsize=7, color="#555555", ha="left", va="bottom")
    return fig


#: The axis chart's panels: regimes compared in reviews/s, and in p99 latency.
_THROUGHPUT_KEYS = ("slo", "saturated")     # and every overload_*
_MARKERS = "osD^v<>p*"


def _axis_x(costs: list[float]) -> tuple[list[float], float]:
    """Cost 0 has no place on a log axis: it is drawn a factor of 4 left of the smallest other
    cost (its tick says 0)."""
    pos = [c for c in costs if c > 0]
    zero_at = (min(pos) / 4) if pos else 1.0
    return [c if c > 0 else zero_at for c in costs], zero_at


def fig_cost_axis(summary: Mapping[str, Any]) -> Figure | None:
    """The verdict along the synthetic cost axis: per regime, the challenger's advantage over the
    baseline (> 1: the challenger wins) against the cost per input, log x; bars: 95 % intervals."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    v = summary.get("verdict") or {}
    entries = sorted(v.get("cost_axis") or [], key=lambda e: e["cost_us"])
    pair = v.get("pair")
    if not entries or not pair:
        return None
    base, chal = pair
    costs = [float(e["cost_us"]) for e in entries]
    xs, zero_at = _axis_x(costs)
    keys: dict[str, str] = {}
    for e in entries:
        for r in e["regimes"]:
            keys.setdefault(r["key"], r["load"])
    fig = Figure(figsize=(13, 4.8), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    a_thr, a_lat = fig.subplots(1, 2, sharey=True)
    b, c = LABELS[base], LABELS[chal]
    panels = ((a_thr, [k for k in keys if k in _THROUGHPUT_KEYS or k.startswith("overload")],
               f"successful reviews/s: {c} ÷ {b}"),
              (a_lat, [k for k in keys if k.startswith("latency")],
               f"p99 latency at a share of each one's capacity: {b} ÷ {c}"))
    finite = [a["value"] for e in entries for a in (e.get("advantage") or {}).values()
              if a.get("value")]
    top = max([2.0, *finite]) * 1.6
    bottom = min([0.5, *finite]) / 1.6
    for ax, ks, title in panels:
        for i, k in enumerate(ks):
            px, py, lo, hi, out_x, out_low = [], [], [], [], [], []
            for x, e in zip(xs, entries):
                a = (e.get("advantage") or {}).get(k) or {}
                val = a.get("value")
                if a.get("outright"):
                    out_x.append(x)
                    continue
                if val == 0:          # the challenger served nothing: the baseline's outright
                    out_low.append(x)
                if not val:
                    continue
                l, h = (list(a.get("ci95") or []) + [None, None])[:2]
                px.append(x)
                py.append(val)
                lo.append(max(0.0, val - l) if l is not None else 0.0)
                hi.append(max(0.0, h - val) if h is not None else 0.0)
            mk = _MARKERS[i % len(_MARKERS)]
            line = ax.errorbar(px, py, yerr=[lo, hi], marker=mk, capsize=3, lw=1.6, ms=6,
                               label=keys[k])
            if out_x:
                # one row per regime, so two outright wins at one cost do not hide each other
                ax.plot(out_x, [top / 1.15 / 1.13 ** i] * len(out_x), marker="^", ls="none",
                        ms=9, color=line[0].get_color())
            if out_low:
                ax.plot(out_low, [bottom * 1.15 * 1.13 ** i] * len(out_low), marker="v",
                        ls="none", ms=9, color=line[0].get_color())
        ax.axhline(1.0, color="#333333", lw=1.2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(bottom, top)
        ax.yaxis.set_major_locator(FixedLocator([2.0 ** k for k in range(-8, 9)]))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}×"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_locator(FixedLocator(xs))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{cc:,.0f}" for cc in costs])
        ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)
        ax.set_xlabel("synthetic model cost, µs of CPU per input (log; 0 drawn at the left)")
        ax.set_title(title, fontsize=10)
        ax.text(0.01, 0.98, f"above 1: {c} wins", transform=ax.transAxes, fontsize=8,
                va="top", color=COLORS[chal])
        ax.text(0.01, 0.02, f"below 1: {b} wins", transform=ax.transAxes, fontsize=8,
                va="bottom", color=COLORS[base])
        ax.grid(True, which="both", alpha=0.3)
        if ks:
            ax.legend(fontsize=8, loc="best")
    a_thr.set_ylabel(f"{c}'s advantage over {b} (×, log)")
    m = summary.get("machine") or {}
    fig.suptitle(f"Which should I use as the model gets costlier? {b} vs {c} along a SYNTHETIC "
                 "cost per input (bars: 95 % intervals; ▲▼ an outright win)", fontsize=11)
    fig.get_layout_engine().set(rect=(0, 0.04, 1, 0.96))
    fig.text(0.01, 0.008, f"run {summary.get('run_id')} · {m.get('cpu_model', '?')}, "
                          f"{m.get('cpus', '?')} cores · synthetic: a calibrated busy loop per "
                          "input, not a real model · each deployment pinned to one core",
             fontsize=7, color="#555555", ha="left", va="bottom")
    return fig
