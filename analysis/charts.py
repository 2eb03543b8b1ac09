"""Charts of an analysed run: one function per chart, each returning a matplotlib Figure.

Figures are built with the object API on an Agg canvas (no pyplot, no global backend state), so
the same functions work in a headless CI job, in the report, and in the notebook. Both modes share
axes wherever they are compared and always wear the same colours; every time chart shades the
warm-up, marks faults with vertical lines, and carries a caption (scenario, machine, run id).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from . import figures as figs
from . import metrics as mx
from .summary import RunAnalysis


class _ByMode(dict):
    """A mode's colour or label: the article's pair keep theirs, any other deployment takes the
    next one of ``spare`` on first sight (so one run's charts always agree)."""

    def __init__(self, known: dict[str, str], spare: list[str] | None = None):
        super().__init__(known)
        self._spare = list(spare or [])

    def __missing__(self, name: str) -> str:
        value = self._spare[len(self) % len(self._spare)] if self._spare else name
        self[name] = value
        return value


#: One colour per mode, everywhere (Okabe-Ito: readable by colour-blind readers).
COLORS = _ByMode({"rest": "#D55E00", "stream": "#0072B2"},
                 ["#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"])
LABELS = _ByMode({"rest": "REST", "stream": "stream"})
#: One colour per error kind, everywhere.
KIND_COLORS = dict(zip(
    ["timeout", "refused", "http_5xx", "http_4xx", "bad_response", "produce_error", "no_prediction",
     "in_flight", "generator_saturated", "retries_exhausted"],
    ["#E69F00", "#CC79A7", "#D55E00", "#F0E442", "#999999", "#56B4E9", "#009E73", "#000000",
     "#882255", "#44AA99"]))
WARMUP_COLOR = "#bbbbbb"
DPI = 110
TIME_LABEL = "time since the mode's start (s)"


def _figure(ra: RunAnalysis, title: str, nrows: int = 1, ncols: int = 1, size=(10, 4.6), **kw):
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    missing = [LABELS[m] for m in ra.run.missing]
    fig.suptitle(title + (f"  [incomplete: {', '.join(missing)} missing]" if missing else
                          ("" if ra.complete else "  [run incomplete]")), fontsize=12)
    fig.get_layout_engine().set(rect=(0, 0.04, 1, 0.96))
    fig.text(0.01, 0.008, ra.run.caption, fontsize=7, color="#555555", ha="left", va="bottom")
    return fig, axes


def _decorate_time(ax, ra: RunAnalysis, faults_label: bool = True, only: str | None = None) -> None:
    """Shade the warm-up, mark the window end and every fault (mode-coloured dashed lines);
    ``only`` restricts the fault lines to one mode (for per-mode panels)."""
    warmups = sorted({ma.data.window.warmup_s for ma in ra.modes.values()})
    for i, w in enumerate(warmups):
        if w > 0:
            ax.axvspan(0, w, color=WARMUP_COLOR, alpha=0.25, lw=0, label="warm-up" if i == 0 else None)
    ends = sorted({ma.data.window.end for ma in ra.modes.values()})
    for e in ends:
        ax.axvline(e, color="#777777", lw=0.8, ls=":", zorder=1)
    seen = False
    for name, ma in ra.modes.items():
        if only is not None and name != only:
            continue
        recs = {r.t_s: r for r in ma.metrics.recoveries}
        for f in ma.data.faults:
            ax.axvline(f.t_s, color=COLORS[name], lw=1.4, ls="--", zorder=3,
                       label="fault" if faults_label and not seen else None)
            if f.ended_t_s is not None and f.ended_t_s > f.t_s:   # down / paused / restarting
                ax.axvspan(f.t_s, f.ended_t_s, color=COLORS[name], alpha=0.10, lw=0, zorder=0)
            ax.annotate(fault_label(name, f, recs.get(f.t_s)), (f.t_s, 0.98),
                        xycoords=("data", "axes fraction"), fontsize=7, rotation=90, va="top",
                        ha="right" if name == ra.baseline else "left", color=COLORS[name],
                        xytext=(-2 if name == ra.baseline else 2, 0), textcoords="offset points",
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                              "alpha": 0.7})
            seen = True
    ax.set_xlabel(TIME_LABEL)
    ax.grid(True, alpha=0.3)


def fault_label(mode: str, f: mx.Fault, rec: mx.Recovery | None) -> str:
    """'REST kill_worker · back in 3 s' (the marker's text on every time chart)."""
    text = f"{LABELS[mode]} {f.kind}"
    if rec is not None:
        text += (f" · back in {rec.recovery_s:.0f} s" if rec.recovery_s is not None
                 else " · not back" if rec.baseline_per_s else "")
    return text


def fig_throughput(ra: RunAnalysis) -> Figure:
    # A REST request may carry 1,000 reviews where a stream event carries one: then only
    # reviews/s compare (requests/s would draw the busier side as a flat line at the bottom).
    per_review = _per_review(ra)
    col, unit = ("reviews_per_s", "reviews") if per_review else ("ok_per_s", "req")
    fig, ax = _figure(ra, "Successful throughput over time"
                      + (" (reviews answered ok)" if per_review else ""))
    ax = ax[0, 0]
    for name, ma in ra.modes.items():
        s1, s10 = ma.series.throughput_1s, ma.series.throughput_10s
        mean = ma.metrics.reviews_per_s if per_review else ma.metrics.successful_throughput
        ax.plot(s1["t_s"] + 0.5, s1[col], color=COLORS[name], lw=0.7, alpha=0.4,
                label=f"{LABELS[name]} · per 1 s")
        ax.step(s10["t_s"], s10[col], where="post", color=COLORS[name], lw=2.2,
                label=f"{LABELS[name]} · per 10 s (mean {mean:,.1f} {unit}/s)")
    _decorate_time(ax, ra)
    ax.set_ylabel("ok reviews / s" if per_review else "ok requests / s")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="best")
    return fig


def fig_latency(ra: RunAnalysis) -> Figure:
    fig, ax = _figure(ra, "Latency over time (open loop, per 10 s, log scale)")
    ax = ax[0, 0]
    any_data = False
    for name, ma in ra.modes.items():
        s = ma.series.latency_10s
        x = s["t_s"] + 5.0
        for p, ls, lw in (("p99", "-", 2.0), ("p50", "--", 1.3)):
            y = s[p].where(s[p] > 0)
            if y.notna().any():
                any_data = True
                ax.plot(x, y, color=COLORS[name], ls=ls, lw=lw, marker="o", ms=2.5,
                        label=f"{LABELS[name]} {p}")
    if any_data:
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no successful request", transform=ax.transAxes, ha="center")
    _decorate_time(ax, ra)
    ax.set_ylabel("latency (ms): done − intended send")
    ax.legend(fontsize=8, loc="upper left")
    return fig


ERROR_SERIES_FIXED = ("t_s", "in_window", "attempts", "errors", "error_fraction", "retries_per_s")


def _per_review(ra: RunAnalysis) -> bool:
    """True when some request carried more than one review: then only reviews/s compare."""
    return any((ma.series.throughput_1s["reviews_per_s"]
                != ma.series.throughput_1s["ok_per_s"]).any() for ma in ra.modes.values())


def fig_article(ra: RunAnalysis) -> Figure:
    """The article's three views side by side, both modes on shared time axes: successful
    throughput, errors and retries, latency."""
    fig, axes = _figure(ra, "Successful throughput, errors and retries, latency: side by side",
                        ncols=3, size=(15, 4.4), sharex=True)
    a_thr, a_err, a_lat = axes[0]
    per_review = _per_review(ra)
    col = "reviews_per_s" if per_review else "ok_per_s"
    lat_drawn = False
    for name, ma in ra.modes.items():
        c, lab = COLORS[name], LABELS[name]
        s10 = ma.series.throughput_10s
        a_thr.step(s10["t_s"], s10[col], where="post", color=c, lw=2.2, label=lab)
        e = ma.series.errors_1s
        a_err.plot(e["t_s"] + 0.5, e["errors"], color=c, lw=1.4, label=f"{lab} failed attempts")
        if e["retries_per_s"].any():
            a_err.plot(e["t_s"] + 0.5, e["retries_per_s"], color=c, lw=1.0, ls="--",
                       label=f"{lab} retries")
        lat = ma.series.latency_10s
        for p, ls in (("p99", "-"), ("p50", ":")):
            y = lat[p].where(lat[p] > 0)
            if y.notna().any():
                lat_drawn = True
                a_lat.plot(lat["t_s"] + 5.0, y, color=c, ls=ls, lw=1.8, marker="o", ms=2.5,
                           label=f"{lab} {p}")
    a_thr.set_title("successful throughput (per 10 s)", fontsize=10)
    a_thr.set_ylabel("ok reviews / s" if per_review else "ok requests / s")
    a_err.set_title("errors and retries (per 1 s, symlog)", fontsize=10)
    a_err.set_ylabel("attempts / s")
    a_err.set_yscale("symlog", linthresh=1.0)  # a few retries/s and a burst of 20k both show
    a_lat.set_title("latency from the intended send (per 10 s)", fontsize=10)
    a_lat.set_ylabel("ms")
    if lat_drawn:
        a_lat.set_yscale("log")
    for ax in (a_thr, a_err, a_lat):
        _decorate_time(ax, ra, faults_label=False)
        if ax is not a_lat:
            ax.set_ylim(bottom=0)
        handles, _ = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=7, loc="best")
    return fig


def fig_sweep(ra: RunAnalysis) -> Figure | None:
    """Rate-steps scenarios only: served vs offered rate, and p99 per step, with the SLO."""
    if not any(ma.steps for ma in ra.modes.values()):
        return None
    slo = (ra.run.meta.get("scenario") or {}).get("slo") or {}
    fig, axes = _figure(ra, "Throughput-latency curve (rate steps)", ncols=2, size=(12, 4.4))
    a_thr, a_lat = axes[0]
    hi = 0.0
    for name, ma in ra.modes.items():
        rows = ma.steps or []
        x = [r.offered_per_s for r in rows]
        hi = max([hi, *x])
        best = mx.max_sustainable(rows)
        a_thr.plot(x, [r.ok_per_s for r in rows], color=COLORS[name], marker="o",
                   label=f"{LABELS[name]} (max sustainable "
                         f"{'none' if best is None else f'{best.offered_per_s:,.0f}'} req/s)")
        a_lat.plot(x, [r.p99_ms if r.p99_ms else np.nan for r in rows], color=COLORS[name],
                   marker="o", label=f"{LABELS[name]} p99")
    a_thr.plot([0, hi], [0, hi], color="#999999", ls=":", lw=1, label="served = offered")
    a_thr.set_xlabel("offered (requests / s)")
    a_thr.set_ylabel("served ok (requests / s)")
    a_lat.set_xlabel("offered (requests / s)")
    a_lat.set_ylabel("p99 latency (ms, open loop)")
    a_lat.set_yscale("log")
    if slo.get("p99_ms"):
        a_lat.axhline(slo["p99_ms"], color="#B22222", ls="--", lw=1, label=f"SLO {slo['p99_ms']:g} ms")
    for ax in (a_thr, a_lat):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    return fig


def fig_errors(ra: RunAnalysis) -> Figure:
    names = [n for n in ra.order if n in ra.modes] or [ra.baseline]
    fig, axes = _figure(ra, "Errors over time by kind (failed attempts / s, per 1 s)", nrows=len(names),
                        sharex=True, sharey=True, size=(10, 2.6 * len(names) + 0.8))
    for ax, name in zip(axes[:, 0], names):
        ma = ra.modes.get(name)
        ax.set_title(LABELS[name], loc="left", fontsize=10, color=COLORS[name])
        kinds = [c for c in (ma.series.errors_1s.columns if ma else [])
                 if c not in ERROR_SERIES_FIXED]
        if kinds:
            s = ma.series.errors_1s
            ax.stackplot(s["t_s"], *[s[k] for k in kinds], step="post", labels=kinds,
                         colors=[KIND_COLORS.get(k, "#777777") for k in kinds], alpha=0.85)
            ax.legend(fontsize=8, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no errors" if ma else "mode missing", transform=ax.transAxes,
                    ha="center", va="center", color="#555555")
        _decorate_time(ax, ra, faults_label=False, only=name)
        ax.set_ylabel("errors / s")
        ax.set_ylim(bottom=0)
    return fig


def fig_latency_cdf(ra: RunAnalysis) -> Figure:
    fig, ax = _figure(ra, "Latency distribution of successful requests in the window (CDF)")
    ax = ax[0, 0]
    drawn = False
    for name, ma in ra.modes.items():
        req = mx.requests_of(mx.in_window(ma.data.table, ma.data.window))
        for view, ls in (("open", "-"), ("service", ":")):
            v = np.sort(mx.latencies_ms(req, view))
            v = v[np.isfinite(v) & (v > 0)]
            if v.size:
                drawn = True
                ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", color=COLORS[name], ls=ls,
                        lw=1.8 if view == "open" else 1.2,
                        label=f"{LABELS[name]} · {'open loop' if view == 'open' else 'service'}")
    if drawn:
        ax.set_xscale("log")
        ax.legend(fontsize=8, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no successful request", transform=ax.transAxes, ha="center")
    for q in (0.5, 0.99):
        ax.axhline(q, color="#999999", lw=0.7, ls="--")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of ok requests ≤ x")
    ax.set_ylim(0, 1.01)
    ax.grid(True, alpha=0.3, which="both")
    return fig


def fig_in_flight(ra: RunAnalysis) -> Figure:
    fig, ax = _figure(ra, "Requests in flight (sent, not yet answered; the stream's backlog)")
    ax = ax[0, 0]
    for name, ma in ra.modes.items():
        s = ma.series.in_flight_1s
        ax.plot(s["t_s"], s["in_flight"], color=COLORS[name], lw=1.5,
                label=f"{LABELS[name]} (max {ma.metrics.in_flight_max:,d})")
    _decorate_time(ax, ra)
    ax.set_ylabel("attempts in flight")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def fig_cpu(ra: RunAnalysis) -> Figure | None:
    """CPU % over time per mode and role (100 % = one core); None if no mode has a cpu.csv."""
    if not any(len(ma.cpu) for ma in ra.modes.values()):
        return None
    fig, ax = _figure(ra, "CPU over time (100 % = one core busy)")
    ax = ax[0, 0]
    styles = {"service": ("-", 1.8), "broker": ("--", 1.2), "driver": (":", 1.2)}
    for name, ma in ra.modes.items():
        roles = sorted((c for c in ma.cpu.columns if c != "t_s"), key=lambda r: (r != "service", r))
        for role in roles:
            ls, lw = styles.get(role, ("-.", 1.0))
            ax.plot(ma.cpu["t_s"], ma.cpu[role], color=COLORS[name], ls=ls, lw=lw,
                    label=f"{LABELS[name]} · {role}")
    _decorate_time(ax, ra)
    ax.set_ylabel("CPU %")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    return fig


def fig_summary(ra: RunAnalysis) -> Figure:
    """One bar chart per figure marked ``panel`` in analysis.figures, three to a row."""
    panel = [f for f in figs.FIGURES if f.panel]
    nrows = max(1, -(-len(panel) // 3))
    fig, axes = _figure(ra, "Headline metrics (measured window)", nrows=nrows, ncols=3,
                        size=(11, 3 * nrows))
    names = [n for n in ra.order if n in ra.modes]
    for ax in list(axes.flat)[len(panel):]:
        ax.set_visible(False)
    for ax, f in zip(axes.flat, panel):
        vals = [mx.headline(ra.modes[n].metrics)[f.key] for n in names]
        heights = [v if v is not None else 0.0 for v in vals]
        bars = ax.bar([LABELS[n] for n in names], heights, color=[COLORS[n] for n in names])
        for b, v in zip(bars, vals):
            ax.annotate(f.format(v), (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=9)
        shown = [f"{LABELS[n]} ÷ {LABELS[ra.baseline]} = " + figs.RATIO_SPEC.format(r)
                 for n in names if (r := (ra.ratios.get(n) or {}).get(f.key)) is not None]
        ax.set_title("\n".join([f.label, *shown[:2]]), fontsize=9)
        ax.margins(y=0.2)
        ax.grid(True, axis="y", alpha=0.3)
    return fig


#: name -> (builder, what it shows); the report and notebook iterate this, in order.
CHARTS: dict[str, Callable[[RunAnalysis], Figure | None]] = {
    "summary": fig_summary,
    "article": fig_article,
    "sweep": fig_sweep,
    "throughput": fig_throughput,
    "latency": fig_latency,
    "errors": fig_errors,
    "latency_cdf": fig_latency_cdf,
    "in_flight": fig_in_flight,
    "cpu": fig_cpu,
}


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def render_charts(ra: RunAnalysis, out_dir: str | Path) -> dict[str, Path]:
    """Write every chart that has data as ``<out_dir>/<name>.png``; returns name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, build in CHARTS.items():
        fig = build(ra)
        if fig is None:
            continue
        path = out / f"{name}.png"
        path.write_bytes(png_bytes(fig))
        written[name] = path
    return written
