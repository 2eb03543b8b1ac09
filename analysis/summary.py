"""From a loaded run to its analysis, summary.json (the public contract) and summary.md.

``analyse`` runs every metric once; ``build_summary`` shapes the result exactly as
docs/CONTRACTS.md says (plus extras); ``headline_table`` is the one table that the Markdown, the
HTML report and the notebook all show, so they can never disagree.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from . import figures as figs
from . import metrics as mx
from . import repeats as rp
from .rundir import ModeData, Run, mode_order
from .figures import fmt
from .verdict import run_verdict
from .workers import Workers, workers_from_meta, workers_line


@dataclass
class ModeAnalysis:
    data: ModeData
    metrics: mx.ModeMetrics
    series: mx.ModeSeries
    cpu: pd.DataFrame              # t_s + one column per role (service/broker/driver), CPU %
    cpu_mean: dict[str, float | None]
    steps: list[mx.Step] | None = None   # rate-steps scenarios only: each step against the SLO
    workers: Workers | None = None       # configured vs answering workers (analysis/workers.py)
    core_noise: mx.CoreNoise | None = None   # others' load on the service cores (cores.csv)


@dataclass
class RunAnalysis:
    run: Run
    modes: dict[str, ModeAnalysis]
    #: each mode but the baseline -> {headline metric: mode ÷ baseline}
    ratios: dict[str, dict[str, float | None]]
    #: A repeated run: every repeat's analysis, and which of them ``modes`` shows.
    repeats: list[RunAnalysis] = field(default_factory=list)
    representative: int | None = None

    @property
    def complete(self) -> bool:
        return self.run.complete

    @property
    def order(self) -> list[str]:
        """Every mode of the run (present or missing), in the scenario's order."""
        return mode_order(self.run.meta, [*self.modes, *self.run.missing])

    @property
    def baseline(self) -> str:
        """The mode every other is compared with: the scenario's first."""
        return baseline_of(self.run.meta, self.order)


def analyse_mode(data: ModeData) -> ModeAnalysis:
    series = mx.mode_series(data.table, data.window)
    m = mx.mode_metrics(data.table, data.window, mode=data.name, ceiling=data.ceiling,
                        faults=data.faults, series=series)
    cpu = mx.cpu_by_role(data.cpu, data.role_by_pid) if data.cpu is not None else \
        pd.DataFrame({"t_s": pd.Series(dtype=float)})
    means = mx.cpu_means(cpu, data.window)
    return ModeAnalysis(data, m, series, cpu, means, workers=workers_from_meta(data.meta),
                        core_noise=mx.core_noise(data.cores, data.window, means.get("service")))


def analyse(run: Run) -> RunAnalysis:
    """Every metric of a run. A repeated run is shown through its most typical repeat (the one
    whose ratio is nearest the repeats' median); every repeat feeds the ``repeats`` block."""
    if run.repeats:
        reps = [analyse(r) for r in run.repeats]
        order = mode_order(run.meta, [*run.repeats[0].modes, *run.repeats[0].missing])
        first = baseline_of(run.meta, order)
        other = next((m for m in order if m != first), first)
        k = rp.representative([_figures(r, first).get(rp.ratio_name(other, first)) for r in reps])
        view = dataclasses.replace(run, modes=run.repeats[k].modes, missing=run.repeats[k].missing)
        return RunAnalysis(view, reps[k].modes, reps[k].ratios, repeats=reps, representative=k)
    modes = {name: analyse_mode(d) for name, d in run.modes.items()}
    sc = run.meta.get("scenario") or {}
    steps = mx.rate_steps(sc)
    if steps:
        slo = sc.get("slo") or {}
        for ma in modes.values():
            w = ma.data.window
            ma.steps = mx.step_metrics(ma.data.table, steps, w.warmup_s + w.duration_s,
                                       slo_p99_ms=slo.get("p99_ms"),
                                       max_error_rate=slo.get("max_error_rate"))
    order = mode_order(run.meta, [*modes, *run.missing])
    first = baseline_of(run.meta, order)
    base = modes.get(first)
    ratios = {name: mx.ratios(base.metrics if base else None,
                              modes[name].metrics if name in modes else None)
              for name in order if name != first}
    return RunAnalysis(run, modes, ratios)


def _model_line(info: Any) -> dict[str, Any] | None:
    """The model as the reports name it: its name, version and a synthetic cost's label."""
    if not isinstance(info, dict):
        return None
    out = {k: info.get(k) for k in ("name", "version") if info.get(k) is not None}
    cost = info.get("synthetic_cost")
    if isinstance(cost, dict) and cost.get("label"):
        out["synthetic"] = cost["label"]
    return out or None


def baseline_of(meta: dict[str, Any], present: Any) -> str:
    """The mode every ratio is taken against: the scenario's first, else the first present."""
    order = mode_order(meta, list(present))
    return order[0] if order else ""


def mode_names(summary: dict[str, Any]) -> list[str]:
    """The modes of a summary, in its order (the scenario's)."""
    return list(summary.get("modes") or {})


def _figures(ra: RunAnalysis, first: str) -> dict[str, float | None]:
    return rp.figures({n: mx.headline(ma.metrics) for n, ma in ra.modes.items()}, first,
                      [m for m in ra.order if m in ra.modes])


def repeats_block(ra: RunAnalysis) -> rp.RepeatsBlock:
    """Each headline figure over the repeats, or over time windows of the one run."""
    first = ra.baseline
    if ra.repeats:
        return rp.summarise([_figures(r, first) for r in ra.repeats], source="repeats")
    if not ra.modes:
        return rp.summarise([], source="windows", windows=0)
    n = min(rp.window_count(ma.data.window.duration_s) for ma in ra.modes.values())
    slices = {name: mx.slice_headlines(ma.data.table, ma.data.window, n)
              for name, ma in ra.modes.items()}
    present = [m for m in ra.order if m in slices]
    samples = [rp.figures({m: slices[m][i] for m in present}, first, present) for i in range(n)]
    return rp.summarise(samples, source="windows", windows=n)


# --------------------------------------------------------------------------------------------
# summary.json


def mode_summary(ma: ModeAnalysis) -> dict[str, Any]:
    """The contract's M (sent ... efficiency) followed by extras."""
    m = ma.metrics
    lat = mx.jsonable(m.latency_ms)
    lat.pop("n")
    svc = mx.jsonable(m.service_latency_ms)
    svc.pop("n")
    out = {
        "sent": m.counts.sent,
        "ok": m.counts.ok,
        "failed": m.counts.failed,
        "successful_throughput": m.successful_throughput,
        "reviews_per_s": m.reviews_per_s,
        "reviews_answered_per_s": m.reviews_answered_per_s,
        "latency_ms": lat,
        "error_rate": m.error_rate,
        "throughput_cv": m.throughput_cv,
        "efficiency": m.efficiency,
        # extras
        "complete": ma.data.complete,
        "window": {"warmup_s": m.window.warmup_s, "duration_s": m.window.duration_s},
        "attempts": m.counts.attempts,
        "failed_attempts": m.counts.failed_attempts,
        "retry_amplification": m.retry_amplification,
        "attempt_error_rate": m.attempt_error_rate,
        "error_kinds": m.error_kinds,
        "failed_by_kind": m.failed_by_kind,
        "duplicates": m.counts.duplicates,
        "reviews_ok": m.counts.reviews_ok,
        "service_latency_ms": svc,
        "throughput_spread_1s": mx.jsonable(m.spread_1s),
        "throughput_spread_10s": mx.jsonable(m.spread_10s),
        "in_flight": {"max": m.in_flight_max, "mean": m.in_flight_mean},
        "ceiling_reviews_per_s": m.ceiling.reviews_per_s,
        "efficiency_source": m.ceiling.source,
        # the mode's own ceiling record (every try, best, noise) and whether it held
        "ceiling": ma.data.meta.get("ceiling"),
        "ceiling_check": mx.ceiling_check(m.reviews_per_s, m.ceiling),
        "core_noise": ma.core_noise,
        "service_cpu_mean": ma.cpu_mean.get("service"),
        "cpu_mean_by_role": ma.cpu_mean,
        "recoveries": mx.jsonable(list(m.recoveries)),
        "faults": fault_summaries(ma),
        "workers": ma.workers or workers_from_meta(ma.data.meta),
        "broker": {k: (ma.data.meta.get("broker") or {}).get(k) for k in ("name", "version")}
        if ma.data.meta.get("broker") else None,
        "broker_drift": mx.broker_drift(ma.cpu, ma.data.table, ma.data.window),
        "broker_cost": mx.broker_cost(ma.cpu, ma.data.table, ma.data.window),
        "notes": list(ma.data.notes),
    }
    return mx.jsonable(out)


def fault_summaries(ma: ModeAnalysis) -> list[dict[str, Any]]:
    """One entry per injected fault: what was done (meta), time to recover, and the requests
    lost / retried / duplicated around it."""
    m = ma.metrics
    out = []
    faults = sorted(ma.data.faults, key=lambda f: f.t_s)
    for f, rec, imp in zip(faults, m.recoveries, m.fault_impacts):
        out.append(mx.jsonable({
            "t_s": f.t_s, "kind": f.kind, "target": f.target, "pid": f.pid,
            "duration_s": f.duration_s, "ended_t_s": f.ended_t_s,
            "baseline_per_s": rec.baseline_per_s, "recovered_at_s": rec.recovered_at_s,
            "recovery_s": rec.recovery_s,
            "span_s": [imp.span_start_s, imp.span_end_s], "requests": imp.requests,
            "ok": imp.ok, "lost": imp.lost, "lost_by_kind": imp.lost_by_kind,
            "retried": imp.retried, "extra_attempts": imp.extra_attempts,
            "duplicated": imp.duplicated, "duplicates": imp.duplicates,
        }))
    return out


def sweep_summary(ma: ModeAnalysis, meta: dict[str, Any]) -> dict[str, Any] | None:
    """For a rate-steps scenario: each step against the SLO and the maximum sustainable
    throughput, with its efficiency against the run's ceiling; None for other scenarios."""
    if ma.steps is None:
        return None
    slo = (meta.get("scenario") or {}).get("slo") or {}
    best = mx.max_sustainable(ma.steps)
    return {
        "slo": {"p99_ms": slo.get("p99_ms"), "max_error_rate": slo.get("max_error_rate", 0.01)},
        "steps": [mx.jsonable(r) for r in ma.steps],
        "max_sustainable_ops_per_s": best.offered_per_s if best else None,
        "max_sustainable_ok_per_s": best.ok_per_s if best else None,
        "max_sustainable_reviews_per_s": best.reviews_per_s if best else None,
        "efficiency_at_max": mx.efficiency(best.reviews_per_s, ma.metrics.ceiling) if best else None,
    }


def sweep_table(summary: dict[str, Any]) -> pd.DataFrame:
    """Rate steps of both modes side by side (empty unless the scenario had steps)."""
    rows = []
    for name in mode_names(summary):
        sw = ((summary.get("modes") or {}).get(name) or {}).get("sweep")
        for st in (sw or {}).get("steps") or []:
            rows.append({"mode": name, "offered (req/s)": fmt(st["offered_per_s"], "{:,.0f}"),
                         "ok (req/s)": fmt(st["ok_per_s"], "{:,.1f}"),
                         "p50 (ms)": fmt(st["p50_ms"], "{:,.1f}"),
                         "p99 (ms)": fmt(st["p99_ms"], "{:,.1f}"),
                         "errors": fmt(None if st["error_rate"] is None else 100 * st["error_rate"],
                                       "{:.2f}%"),
                         "within SLO": "yes" if st["sustainable"] else "no"})
        if sw:
            rows.append({"mode": name, "offered (req/s)": "max sustainable",
                         "ok (req/s)": fmt(sw["max_sustainable_ok_per_s"], "{:,.1f}"),
                         "p50 (ms)": "", "p99 (ms)": "",
                         "errors": "efficiency " + fmt(sw["efficiency_at_max"], "{:.1%}"),
                         "within SLO": ""})
    return pd.DataFrame(rows)


def build_summary(ra: RunAnalysis) -> dict[str, Any]:
    """summary.json: {scenario, complete, modes: {<name>: M|null, ...}, baseline, ratios:
    {<name>: {metric: ratio}}, ...extras}, the modes in the scenario's order."""
    run = ra.run
    modes = {name: (mode_summary(ra.modes[name]) if name in ra.modes else None)
             for name in ra.order}
    for name, ma in ra.modes.items():
        sweep = sweep_summary(ma, run.meta)
        if sweep is not None:
            modes[name]["sweep"] = sweep
    extras: dict[str, Any] = {}
    if ra.repeats:
        listed = {r.get("dir"): r for r in (run.meta.get("repeats") or {}).get("runs") or []}
        extras["repeat_runs"] = [
            {"dir": r.run.path.name, "order": (listed.get(r.run.path.name) or {}).get("order"),
             "complete": r.run.complete} for r in ra.repeats]
        extras["representative_repeat"] = ra.repeats[ra.representative or 0].run.path.name
    return mx.jsonable({
        "scenario": run.scenario_name,
        "complete": run.complete,
        "modes": modes,
        "baseline": ra.baseline,
        "ratios": ra.ratios,
        # extras
        "run_id": run.run_id,
        "created_utc": run.meta.get("created_utc"),
        "git_commit": run.meta.get("git_commit"),
        "machine": run.meta.get("machine"),
        "missing_modes": list(run.missing),
        "notes": list(run.notes),
        "repeats": repeats_block(ra).to_dict(),
        "calibration": run.meta.get("calibration"),
        "model": _model_line(run.meta.get("model")),
        **extras,
    })


# --------------------------------------------------------------------------------------------
# Tables and Markdown

def dig(d: Any, path: str) -> Any:
    """d['a']['b'] for path 'a.b'; a key that itself holds dots ('ratios' -> 'latency_ms.p99') is
    matched whole first. None if any step is missing."""
    if path == "":
        return d
    if not isinstance(d, dict):
        return None
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        key = ".".join(parts[:i])
        if key in d:
            found = dig(d[key], ".".join(parts[i:]))
            if found is not None or i == len(parts):
                return found
    return None


def ratio_column(name: str, baseline: str) -> str:
    return f"{name} ÷ {baseline}"


def summary_ratios(summary: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """{mode: {metric: mode ÷ baseline}}; a summary written before modes were named (flat
    stream ÷ rest ratios) reads as {"stream": {...}}."""
    r = summary.get("ratios") or {}
    if r and not all(isinstance(v, dict) or v is None for v in r.values()):
        return {"stream": dict(r)}
    return {k: dict(v or {}) for k, v in r.items()}


def baseline_name(summary: dict[str, Any]) -> str:
    names = mode_names(summary)
    return str(summary.get("baseline") or (names[0] if names else "rest"))


def headline_table(summary: dict[str, Any], formatted: bool = True) -> pd.DataFrame:
    """Metric rows × (each mode, then each mode ÷ the baseline) columns, from a summary dict."""
    modes = summary.get("modes") or {}
    base = baseline_name(summary)
    ratios = summary_ratios(summary)
    rows = []
    for f in figs.FIGURES:
        row: dict[str, Any] = {"metric": f.label}
        for name in mode_names(summary):
            v = dig(modes.get(name), f.key)
            row[name] = f.format(v) if formatted else v
        for name in (n for n in mode_names(summary) if n != base):
            ratio = (ratios.get(name) or {}).get(f.key) if f.ratio else None
            row[ratio_column(name, base)] = ((fmt(ratio, figs.RATIO_SPEC) if formatted else ratio)
                                             if f.ratio else "")
        rows.append(row)
    return pd.DataFrame(rows).set_index("metric")


def _figure_label(name: str) -> tuple[str, str]:
    """'stream/rest.reviews_per_s' -> ('stream ÷ rest reviews/s', ratio format)."""
    who, _, fig = name.partition(".")
    f = figs.by_key(fig)
    label, spec = (f.label, f.spec) if f else (fig, "{:,.4g}")
    if "/" in who:
        return f"{who.replace('/', ' ÷ ')} {label}", figs.RATIO_SPEC
    return f"{who} {label}", spec


def repeats_caption(summary: dict[str, Any]) -> str:
    """What the repeats table's samples are: repeats (interleaved) or one run's time windows."""
    b = summary.get("repeats") or {}
    if not b:
        return ""
    if b.get("source") == "repeats":
        rep = summary.get("representative_repeat")
        return (f"{b.get('n')} repeats, the modes interleaved (rest, stream; stream, rest; ...): "
                "median, range and 95 % bootstrap interval of the median over the repeats"
                + (f"; the other tables and the charts are {rep}'s (its ratio is the nearest "
                   "the median)" if rep else "") + ".")
    return (f"one run (repeat it with --repeat N / make bench REPEAT=N): median, range and 95 % "
            f"bootstrap interval over {b.get('windows')} equal time windows of it — how steady "
            "the run was, not how repeatable.")


def repeats_table(summary: dict[str, Any], formatted: bool = True) -> pd.DataFrame:
    """One row per figure of the ``repeats`` block: median, min, max, 95 % interval, samples."""
    metrics = (summary.get("repeats") or {}).get("metrics") or {}
    rows = []
    for name, st in metrics.items():
        label, spec = _figure_label(name)
        lo, hi = (st.get("ci95") or [None, None])[:2]
        if formatted:
            rows.append({"figure": label, "median": fmt(st.get("median"), spec),
                         "min": fmt(st.get("min"), spec), "max": fmt(st.get("max"), spec),
                         "95 % interval": f"{fmt(lo, spec)} – {fmt(hi, spec)}",
                         "samples": len(st.get("samples") or [])})
        else:
            rows.append({"figure": name, "median": st.get("median"), "min": st.get("min"),
                         "max": st.get("max"), "ci95_lo": lo, "ci95_hi": hi,
                         "samples": len(st.get("samples") or [])})
    if not rows:
        return pd.DataFrame(columns=["median", "min", "max"]).rename_axis("figure")
    return pd.DataFrame(rows).set_index("figure")


def error_table(summary: dict[str, Any]) -> pd.DataFrame:
    """Failed attempts by error kind (rows) per mode (columns)."""
    modes = summary.get("modes") or {}
    data = {name: (modes.get(name) or {}).get("error_kinds") or {} for name in modes}
    kinds = sorted({k for v in data.values() for k in v})
    return pd.DataFrame({name: [data[name].get(k, 0) for k in kinds] for name in modes},
                        index=pd.Index(kinds, name="error kind (attempts)"))


def latency_table(summary: dict[str, Any]) -> pd.DataFrame:
    """Open-loop and service latency percentiles (ms) per mode."""
    modes = summary.get("modes") or {}
    cols = {}
    for name in mode_names(summary):
        m = modes.get(name) or {}
        for view, key in (("open loop", "latency_ms"), ("service", "service_latency_ms")):
            cols[f"{name} · {view}"] = {p: fmt(v, "{:,.2f}") for p, v in (m.get(key) or {}).items()}
    return pd.DataFrame(cols).rename_axis("percentile (ms)")


def recovery_table(summary: dict[str, Any]) -> pd.DataFrame:
    """One row per injected fault and mode: when, what, time to recover, requests around it
    lost / retried / duplicated (from ``faults``; older summaries only have ``recoveries``)."""
    rows = []
    for name in mode_names(summary):
        m = (summary.get("modes") or {}).get(name) or {}
        for r in m.get("faults") or m.get("recoveries") or []:
            row = {"mode": name, "fault at (s)": fmt(r["t_s"], "{:,.1f}"), "kind": r["kind"],
                   "target": r.get("target") or "–"}
            if "ended_t_s" in r:
                row["over at (s)"] = fmt(r.get("ended_t_s"), "{:,.1f}")
            row["baseline (req/s)"] = fmt(r["baseline_per_s"], "{:,.1f}")
            row["recovery (s)"] = (fmt(r["recovery_s"], "{:,.0f}") if r["recovery_s"] is not None
                                   else "never")
            if "requests" in r:
                kinds = ", ".join(f"{k} {v}" for k, v in (r.get("lost_by_kind") or {}).items())
                row.update({"requests around": fmt(r["requests"], "{:,d}"),
                            "lost": fmt(r["lost"], "{:,d}") + (f" ({kinds})" if kinds else ""),
                            "retried": fmt(r["retried"], "{:,d}"),
                            "duplicated": fmt(r["duplicated"], "{:,d}")})
            rows.append(row)
    return pd.DataFrame(rows)


def load_line(summary: dict[str, Any]) -> str | None:
    """How the load was set when a scenario stated it relative to a calibrated capacity."""
    c = summary.get("calibration")
    if not c:
        return None
    head = (f"load relative to {c['mode']}'s capacity, measured first in this run: "
            f"{c['ops_per_s']:,.2f} ops/s ({c['reviews_per_s']:,.0f} reviews/s)")
    if c.get("steps"):
        steps = ", ".join(f"{s['multiple']:g}x = {s['clients']}" for s in c["steps"])
        return (f"{head}; {c['timeout_fill_clients']:,.1f} clients fill its {c['timeout_s']:g} s "
                f"deadline; clients per step: {steps}")
    return f"{head}; rates: {c['rate']['resolved']}"


def broker_lines(summary: dict[str, Any]) -> list[str]:
    """Per mode that ran on a broker: which one, and its CPU per 1,000 answered requests."""
    out = []
    for name in mode_names(summary):
        mode = (summary.get("modes") or {}).get(name) or {}
        b, cost = mode.get("broker") or {}, mode.get("broker_cost")
        if not b or not cost:
            continue
        out.append(f"{name}: {b.get('name')} {b.get('version') or ''}".rstrip()
                   + f": {cost['cpu_ms_per_1k_answered']:,.0f} CPU-ms per 1,000 answered "
                     f"requests ({cost['cpu_percent']:.0f}% of a core over the window)")
    return out


def workers_lines(summary: dict[str, Any]) -> list[str]:
    """Per mode that ran: how many workers answered vs were configured, and the answer spread."""
    modes = summary.get("modes") or {}
    return [workers_line(name, modes[name].get("workers")) for name in modes if modes.get(name)]


#: Broker CPU per answered request, last third of the window ÷ first third, from which the
#: report warns that the broker's own cost drifted (analysis.metrics.broker_drift).
BROKER_DRIFT_WARN = 1.5


def caveats(summary: dict[str, Any]) -> list[str]:
    """What a reader must know before trusting a figure, from the summary alone."""
    out: list[str] = []
    for name in mode_names(summary):
        mode = (summary.get("modes") or {}).get(name) or {}
        broker = (mode.get("broker") or {}).get("name") or "the broker"
        d = mode.get("broker_drift")
        if not d or not d.get("ratio") or d["ratio"] < BROKER_DRIFT_WARN:
            continue
        why = ("the broker, not the deployment, drifted (a broker whose fetch cost grows with "
               "its log costs more the longer a run is); late latencies include that cost")
        out.append(f"{name}: {broker}'s CPU per answered request grew {d['ratio']:.1f}x from the "
                   f"first to the last third of the window ({d['first_cpu_percent']:.0f}% -> "
                   f"{d['last_cpu_percent']:.0f}% of a core): {why}.")
    synthetic = (summary.get("model") or {}).get("synthetic")
    if synthetic:
        out.insert(0, f"the model was made costlier on purpose ({synthetic}): every figure is "
                      "for a model that costly, not for the model itself.")
    return out + ceiling_caveats(summary) + core_noise_caveats(summary)


def ceiling_caveats(summary: dict[str, Any]) -> list[str]:
    """A mode whose reviews/s is above its measured ceiling: beyond the ceiling's own noise the
    efficiency is not a fraction of anything; within it, it reads as "at the model's speed"."""
    out = []
    for name in mode_names(summary):
        m = (summary.get("modes") or {}).get(name) or {}
        check, c = m.get("ceiling_check"), m.get("ceiling_reviews_per_s")
        if check not in ("above", "within_noise") or not c:
            continue
        ceil = m.get("ceiling") or {}
        over, noise = m["reviews_per_s"] / c - 1.0, ceil.get("noise") or 0.0
        what = (f"{name}: {m['reviews_per_s']:,.0f} reviews/s is {over:.1%} above the model's own "
                f"ceiling ({c:,.0f} reviews/s" + (f" at batch {ceil['batch']}" if ceil.get("batch")
                                                  else "") + ")")
        if check == "above":
            out.append(f"{what}, more than the ceiling's measured noise ({noise:.1%}): its "
                       f"efficiency ({m.get('efficiency') or 0:.0%}) is not a share of a ceiling. "
                       "The cores were busier while the ceiling was measured than during the run, "
                       "or the service used more cores than it was measured on.")
        else:
            out.append(f"{what}, within the ceiling's measured noise ({noise:.1%}): efficiency "
                       f"{m.get('efficiency') or 0:.0%} means the model's own speed, no more.")
    return out


def yardstick_lines(summary: dict[str, Any]) -> list[str]:
    """Per mode that ran: its ceiling (best try, batch, noise) and others' load on its cores."""
    out = []
    for name in mode_names(summary):
        m = (summary.get("modes") or {}).get(name)
        if not m:
            continue
        ceil, n = m.get("ceiling") or {}, m.get("core_noise") or {}
        line = f"{name}: ceiling " + fmt(m.get("ceiling_reviews_per_s"), "{:,.0f}") + " reviews/s"
        if ceil.get("tries"):
            line += (f" at batch {ceil.get('batch')} (best of {len(ceil['tries'])} tries, noise "
                     + fmt(ceil.get("noise"), "{:.1%}") + ")")
        if n:
            line += (f"; on its {n.get('cores')} core(s) steal " + fmt(n.get("steal"), "{:.1f}%")
                     + ", other processes " + fmt(n.get("other"), "{:.1f}%"))
        out.append(line)
    return out


def core_noise_caveats(summary: dict[str, Any]) -> list[str]:
    """A mode whose service cores lost more than CORE_NOISE_WARN % each to steal or to
    processes other than the service's over the window."""
    out = []
    for name in mode_names(summary):
        n = ((summary.get("modes") or {}).get(name) or {}).get("core_noise") or {}
        if not n.get("noisy"):
            continue
        other = "–" if n.get("other") is None else f"{n['other']:.0f}%"
        out.append(f"{name}: the service cores were shared during the window: steal "
                   f"{n['steal']:.0f}%, other processes {other} of {n['cores']} core(s) (flagged "
                   f"above {mx.CORE_NOISE_WARN:.0f}% per core): the service had less CPU than "
                   "its cores, so its throughput and latency are pessimistic; re-run on a quiet "
                   "machine before comparing.")
    return out


def status_line(summary: dict[str, Any]) -> str:
    if summary.get("complete"):
        return "complete"
    missing = summary.get("missing_modes") or []
    return "INCOMPLETE" + (f" (missing: {', '.join(missing)})" if missing else "")


def summary_markdown(summary: dict[str, Any]) -> str:
    """summary.md: a Markdown table for a CI log or a PR comment."""
    t = headline_table(summary)
    lines = [
        f"### rest-vs-stream · {summary.get('scenario')} · {status_line(summary)}",
        "",
        f"run `{summary.get('run_id')}` · {fmt_machine(summary.get('machine'))}",
        "",
    ]
    verdict = run_verdict(summary)   # every report opens with its verdict in words
    if verdict:
        lines += [f"**{verdict}**", ""]
    if summary.get("representative_repeat"):
        n = (summary.get("repeats") or {}).get("n")
        lines += [f"{n} interleaved repeats; the tables below are "
                  f"`{summary['representative_repeat']}`'s (the repeat whose reviews/s ratio "
                  "is nearest the median), the repeats table summarises them all.", ""]
    load = load_line(summary)
    if load:
        lines += [f"Load: {load}.", ""]
    cols = list(t.columns)
    lines += ["| metric | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for label, row in t.iterrows():
        lines.append(f"| {label} | " + " | ".join(str(row[c]) for c in cols) + " |")
    reps = repeats_table(summary)
    if len(reps):
        cols = list(reps.columns)
        lines += ["", f"Repeats: {repeats_caption(summary)}", "",
                  "| figure | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        for label, row in reps.iterrows():
            lines.append(f"| {label} | " + " | ".join(str(row[c]) for c in cols) + " |")
    cav = caveats(summary)
    if cav:
        lines += ["", "Caveats:", ""] + [f"- {c}" for c in cav]
    brokers = broker_lines(summary)
    if brokers:
        lines += ["", "Broker:", ""] + [f"- {b}" for b in brokers]
    workers = workers_lines(summary)
    if workers:
        lines += ["", "Workers (each answer names the worker process that served it):", ""]
        lines += [f"- {w}" for w in workers]
    faults = recovery_table(summary)
    if len(faults):
        cols = list(faults.columns)
        lines += ["", "Faults (recovery = first of 3 s in a row back at ≥ 90 % of the pre-fault "
                  "median ok req/s; lost / retried / duplicated = requests around the fault):", "",
                  "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for _, row in faults.iterrows():
            lines.append("| " + " | ".join(str(row[c]) for c in cols) + " |")
    sweep = sweep_table(summary)
    if len(sweep):
        cols = list(sweep.columns)
        lines += ["", "Rate steps (a step is within the SLO when its p99 and error rate are):", "",
                  "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for _, row in sweep.iterrows():
            lines.append("| " + " | ".join(str(row[c]) for c in cols) + " |")
    notes = summary.get("notes") or []
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    lines += ["", "Latency is open loop (from the intended send time, retries included); "
              "throughput counts ok requests due in the measured window ÷ its duration."]
    return "\n".join(lines) + "\n"


def fmt_machine(machine: Any) -> str:
    m = machine or {}
    return f"{m.get('cpu_model', 'unknown CPU')}, {m.get('cpus', '?')} cores, Python {m.get('python', '?')}"


def write_summary(ra: RunAnalysis, out_dir: str | Path | None = None) -> tuple[Path, Path, dict]:
    """Write summary.json and summary.md into the run folder (or ``out_dir``)."""
    out = Path(out_dir or ra.run.path)
    out.mkdir(parents=True, exist_ok=True)
    summary = build_summary(ra)
    js = out / "summary.json"
    js.write_text(json.dumps(summary, indent=2, sort_keys=False, allow_nan=False) + "\n")
    md = out / "summary.md"
    md.write_text(summary_markdown(summary))
    return js, md, summary
