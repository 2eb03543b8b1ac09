"""A ``make verdict`` folder, read and reported: the I/O around analysis/verdict.py.

The folder (bench/verdict.py writes it): ``meta.json`` with ``"kind": "verdict"`` and, per
deployment, its phases; ``<mode>/<phase>/`` holds each phase's scenario.yaml, requests.parquet,
driver.json and cpu.csv, as every bench phase does. From that alone this module rebuilds
summary.json (with its ``verdict`` block), summary.md, charts/verdict.png and report.html, so
``python -m analysis report <folder>`` works on any machine that has the folder.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import metrics as mx
from .figures import RATIO_SPEC
from . import verdict as vd
from .repeats import window_count

#: meta.json's ``kind`` of a verdict folder.
KIND = "verdict"
#: Windows an open-loop step is cut into (its throughput's band on the chart).
STEP_WINDOWS = 4


def is_verdict(run_dir: str | Path) -> bool:
    try:
        return json.loads((Path(run_dir) / "meta.json").read_text()).get("kind") == KIND
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------------------------
# Reading the phases


def _table(phase_dir: Path) -> pd.DataFrame | None:
    from loadgen import record

    path = phase_dir / "requests.parquet"
    return record.read(path) if path.exists() else None


def _windows_reviews(table: pd.DataFrame, window: mx.Window, n: int) -> vd.Sample:
    """Successful reviews/s of each of ``n`` slices of the window (by due time)."""
    return vd.sample([h["reviews_per_s"] for h in mx.slice_headlines(table, window, n)], "mean")


def _latencies(table: pd.DataFrame, window: mx.Window) -> vd.Sample:
    return vd.sample(mx.latencies_ms(mx.requests_of(mx.in_window(table, window)), "open"), "p99")


def window_point(table: pd.DataFrame, window: mx.Window, *, phase: str, load: float,
                 clients: int | None = None) -> vd.Point:
    """A closed-loop phase (saturated, or batch-and-retry) as one point of its deployment."""
    m = mx.mode_metrics(table, window)
    return vd.Point(phase=phase, load=load, offered_reviews_per_s=None,
                    reviews_per_s=_windows_reviews(table, window,
                                                   window_count(window.duration_s)),
                    latency_ms=_latencies(table, window), p50_ms=m.latency_ms.p50,
                    p99_ms=m.latency_ms.p99, error_rate=m.error_rate,
                    retry_amplification=m.retry_amplification,
                    failed_by_kind=dict(m.failed_by_kind), clients=clients)


def step_points(table: pd.DataFrame, steps: list[Mapping[str, Any]]) -> list[vd.Point]:
    """Each open-loop step (``{load, start_s, end_s, offered_reviews_per_s}``) as a point: the
    requests due in it, as analysis.metrics.step_metrics counts them."""
    out = []
    for st in steps:
        w = mx.Window(float(st["start_s"]), float(st["end_s"]) - float(st["start_s"]))
        m = mx.mode_metrics(table, w)
        out.append(vd.Point(phase="open", load=float(st["load"]),
                            offered_reviews_per_s=st.get("offered_reviews_per_s"),
                            reviews_per_s=_windows_reviews(table, w, STEP_WINDOWS),
                            latency_ms=_latencies(table, w), p50_ms=m.latency_ms.p50,
                            p99_ms=m.latency_ms.p99, error_rate=m.error_rate,
                            retry_amplification=m.retry_amplification,
                            failed_by_kind=dict(m.failed_by_kind)))
    return out


def _cpu(phase_dir: Path, window: mx.Window) -> dict[str, float | None]:
    path = phase_dir / "cpu.csv"
    if not path.exists():
        return {}
    return mx.cpu_means(mx.cpu_by_role(pd.read_csv(path)), window)


def mode_figures(run_dir: Path, mode: str, mm: Mapping[str, Any]) -> vd.ModeFigures | None:
    """One deployment's figures from its phases; None when its saturated phase is missing (no
    capacity, nothing relative to it)."""
    phases = mm.get("phases") or {}
    cal = phases.get("calibration") or {}
    cal_dir = run_dir / mode / str(cal.get("dir", "calibration"))
    table = _table(cal_dir)
    cap = (mm.get("capacity") or {}).get("reviews_per_s")
    if table is None or not cap:
        return None
    w = mx.Window(float(cal["warmup_s"]), float(cal["duration_s"]))
    saturated = window_point(table, w, phase="saturated", load=1.0, clients=cal.get("clients"))
    cpu = _cpu(cal_dir, w)
    steps: list[vd.Point] = []
    op = phases.get("open") or {}
    t_open = _table(run_dir / mode / str(op.get("dir", "open"))) if op else None
    if t_open is not None:
        steps = step_points(t_open, op.get("steps") or [])
    over = []
    for name, ph in phases.items():
        if not name.startswith("overload") or not ph.get("complete", True):
            continue
        t = _table(run_dir / mode / str(ph.get("dir", name)))
        if t is None:
            continue
        over.append(window_point(t, mx.Window(float(ph["warmup_s"]), float(ph["duration_s"])),
                                 phase="overload", load=float(ph["load"]),
                                 clients=ph.get("clients")))
    broker = mm.get("broker") or {}
    settings = mm.get("settings") or {}
    others = [ph.get("other_cpu_on_service_cores") for ph in phases.values()
              if isinstance(ph, dict) and ph.get("other_cpu_on_service_cores") is not None]
    return vd.ModeFigures(
        mode=mode, kind=str(mm.get("kind") or mode), engine=str(mm.get("engine") or ""),
        batch_size=int((mm.get("capacity") or {}).get("batch_size") or 1),
        capacity_reviews_per_s=float(cap), saturated=saturated,
        steps=tuple(sorted(steps, key=lambda p: p.load)),
        overload=tuple(sorted(over, key=lambda p: p.load)),
        service_cpus=max(1, len(mm.get("service_cpus") or [0])),
        workers=mm.get("workers") if isinstance(mm.get("workers"), int) else 1,
        partitions=settings.get("partitions") if isinstance(settings.get("partitions"), int)
        else None,
        service_cpu=cpu.get("service"),
        broker_cpu=cpu.get("broker") if broker else None,
        broker=(f"{broker.get('name')} {broker.get('version') or ''}".strip()
                if broker.get("name") else None),
        others_cpu=max(others) if others else None, core_busy=cal.get("service_core_busy"))


@dataclass
class VerdictRun:
    path: Path
    meta: dict[str, Any]
    figures: list[vd.ModeFigures]
    missing: list[str]


def load_verdict(run_dir: str | Path) -> VerdictRun:
    path = Path(run_dir)
    meta = json.loads((path / "meta.json").read_text())
    figs, missing = [], []
    for mode in meta.get("order") or list(meta.get("modes") or {}):
        f = mode_figures(path, mode, (meta.get("modes") or {}).get(mode) or {})
        (figs.append(f) if f is not None else missing.append(mode))
    return VerdictRun(path, meta, figs, missing)


# --------------------------------------------------------------------------------------------
# summary.json, summary.md, report.html


def build_summary(vr: VerdictRun, *, target_reviews_per_s: float | None = None,
                  slo_p99_ms: float | None = None) -> dict[str, Any]:
    """The folder's summary.json; ``target``/``slo`` default to what the run was asked for (a
    re-report may plan for another target or SLO from the same measurements)."""
    asked = vr.meta.get("verdict") or {}
    target = float(target_reviews_per_s or asked.get("target_reviews_per_s") or 0.0)
    slo = slo_p99_ms if slo_p99_ms is not None else asked.get("slo_p99_ms")
    max_err = asked.get("max_error_rate")
    block = vd.verdict_block(vr.figures, slo_p99_ms=slo, max_error_rate=max_err,
                             target_reviews_per_s=target,
                             scaling=vd.Scaling.from_dict(vr.meta.get("scaling")))
    return mx.jsonable({
        "kind": KIND, "scenario": (vr.meta.get("scenario") or {}).get("name"),
        "synthetic": synthetic(vr.meta),
        "complete": bool(vr.meta.get("complete")) and not vr.missing,
        "run_id": vr.meta.get("run_id"), "created_utc": vr.meta.get("created_utc"),
        "git_commit": vr.meta.get("git_commit"), "machine": vr.meta.get("machine"),
        "placement": vr.meta.get("placement"), "command": vr.meta.get("command"),
        "wall_s": vr.meta.get("wall_s"), "missing_modes": vr.missing,
        "verdict": block, "words": vd.verdict_lines(block),
    })


def synthetic(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The synthetic cost the run's model carried (services/model/cost.py), stated and measured,
    with its label; None for a model as it is."""
    model = meta.get("model") or {}
    cost = meta.get("synthetic_cost_us", model.get("synthetic_cost_us"))
    if cost is None:
        return None
    cal = model.get("synthetic_cost") or {}
    return {"cost_us": cost, "measured_us": cal.get("measured_batched_us"),
            "label": f"synthetic: +{cost:g} µs of CPU per input, a calibrated busy loop added to "
                     "the model in every process (not a real model's cost)"}


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
            + ["| " + " | ".join(r) + " |" for r in rows])


def capacity_rows(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per deployment (columns): capacity, latency at ¼ ½ ¾, behaviour past capacity."""
    cap = (summary.get("verdict") or {}).get("capacity") or {}
    modes = list(cap)
    f = vd._fmt
    rows = [["saturated (reviews/s)"] + [f(cap[m]["saturated_reviews_per_s"]) for m in modes],
            ["highest open-loop rate within the SLO (reviews/s)"]
            + [f(cap[m]["slo_reviews_per_s"]) + (f" ({cap[m]['slo_load']:g}×)"
                                                 if cap[m].get("slo_load") else "")
               for m in modes]]
    for _, name in vd.LATENCY_LOADS:
        rows.append([f"p50 / p99 at {name} of capacity (ms)"] + [
            f"{f(cap[m]['latency_ms'][name]['p50'], '{:,.1f}')} / "
            f"{f(cap[m]['latency_ms'][name]['p99'], '{:,.1f}')}" for m in modes])
    loads = sorted({p["load"] for m in modes for p in cap[m]["points"] if p["phase"] == "overload"})
    for load in loads:
        cells = []
        for m in modes:
            p = next((p for p in cap[m]["points"] if p["phase"] == "overload"
                      and p["load"] == load), None)
            if p is None:
                cells.append("–")
                continue
            kept = (p["reviews_per_s"] or 0) / cap[m]["saturated_reviews_per_s"]
            cells.append(f"{f(p['reviews_per_s'])} ({kept:.0%} kept); "
                         f"{vd._pct(p['error_rate'])} % failed; "
                         f"{f(p['retry_amplification'], '{:.2f}')} attempts/request; "
                         f"{p.get('clients') or '?'} clients")
        rows.append([f"batch-and-retry at {load:g}× capacity"] + cells)
    rows.append(["service CPU at saturation (% of its core)"]
                + [f(cap[m]["service_cpu"]) for m in modes])
    rows.append(["broker CPU at saturation (% of a core)"]
                + [f(cap[m]["broker_cpu"]) for m in modes])
    return ["per deployment"] + [vd.label(m) for m in modes], rows


def regime_rows(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    regs = (summary.get("verdict") or {}).get("regimes") or []
    f = vd._fmt
    rows = [[r["load"], vd.label(r["winner"]) if r["winner"] else "–",
             (f(r["ratio"], RATIO_SPEC) + ("" if r["clear"] else " (not clear)")),
             vd.ci_text(r["ci95"]),
             ", ".join(f"{vd.label(m)} {f(v, '{:,.1f}')}" for m, v in r["values"].items())
             + f" ({r['unit']}; {r['better']} is better)"] for r in regs]
    return ["load regime", "winner", "margin", "95 % interval", "figures"], rows


def plan_rows(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    plan = (summary.get("verdict") or {}).get("plan") or {}
    rows = []
    for m, p in (plan.get("modes") or {}).items():
        knobs = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in (p.get("knobs") or {}).items())
        rows.append([vd.label(m), vd._fmt(p.get("per_worker_reviews_per_s")),
                     knobs or "–", vd._fmt(p.get("service_cores")),
                     vd._fmt(p.get("broker_cores")) if p.get("broker_cores") else "–",
                     vd._fmt(p.get("total_cores"))])
    return ["deployment", "per worker (reviews/s, within the SLO)", "workers",
            "service cores (N−1)", "broker cores", "cores in all"], rows


def summary_markdown(summary: Mapping[str, Any]) -> str:
    v = summary.get("verdict") or {}
    plan = v.get("plan") or {}
    m = summary.get("machine") or {}
    lines = [f"### rest-vs-stream · verdict · "
             f"{'complete' if summary.get('complete') else 'INCOMPLETE'}", "",
             f"run `{summary.get('run_id')}` · {m.get('cpu_model', '?')}, {m.get('cpus', '?')} "
             f"cores, Python {m.get('python', '?')}"
             + (f" · `{summary['command']}`" if summary.get("command") else "")
             + (f" · {summary['wall_s'] / 60:.1f} min" if summary.get("wall_s") else ""), ""]
    if summary.get("synthetic"):
        lines += [f"**{summary['synthetic']['label'].capitalize()}.**", ""]
    lines += ["**Verdict.**", ""]
    lines += [f"- {s}" for s in (summary.get("words") or [])[:len(v.get("regimes") or [])]]
    if v.get("caveats"):
        lines += ["", "Caveats:", ""] + [f"- {c}" for c in v["caveats"]]
    lines += ["", "![verdict](charts/verdict.png)", "",
              "Each deployment is measured on its own scale: the service pinned to one core, "
              "one worker; its capacity is its saturated rate (closed loop); the open-loop steps "
              "are fractions of it; the batch-and-retry load (the scenario's client, timeout and "
              "retries) runs clients ÷ the clients whose queueing fills the client's deadline.",
              ""]
    head, rows = capacity_rows(summary)
    lines += _md_table(head, rows) + [""]
    head, rows = regime_rows(summary)
    lines += _md_table(head, rows) + [""]
    if plan:
        lines += [f"**Capacity plan** for {plan['target_reviews_per_s']:,.0f} reviews/s"
                  + (f" at p99 ≤ {plan['slo_p99_ms']:,.0f} ms" if plan.get("slo_p99_ms") else "")
                  + (f" (cheapest: {vd.label(plan['cheapest'])})" if plan.get("cheapest") else "")
                  + ":", ""]
        head, rows = plan_rows(summary)
        lines += _md_table(head, rows) + [""]
        lines += [f"- {p['sentence']}" for p in plan["modes"].values()]
        lines += ["", "Assumptions:", ""] + [f"- {a}" for a in plan.get("assumptions") or []]
        lines.append("")
    if v.get("rules"):
        lines += ["**The article's rules, against these figures:**", ""]
        lines += [f"- *{r['rule']}*: **{r['finding']}**. {r['text']}" for r in v["rules"]]
    if summary.get("missing_modes"):
        lines += ["", f"Missing (a phase failed, see meta.json): "
                      f"{', '.join(summary['missing_modes'])}"]
    return "\n".join(lines) + "\n"


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    return ("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
            + "</table>")


def render_html(summary: Mapping[str, Any], png: bytes | None) -> str:
    from .report import CSS

    e = html.escape
    v = summary.get("verdict") or {}
    plan = v.get("plan") or {}
    n_reg = len(v.get("regimes") or [])
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>rest-vs-stream · verdict · {e(str(summary.get('run_id')))}</title>",
             f"<style>{CSS}</style></head><body>",
             "<h1>rest-vs-stream · which should I use?</h1>",
             f"<p>run <code>{e(str(summary.get('run_id')))}</code> · "
             f"{e(str((summary.get('machine') or {}).get('cpu_model', '?')))} · "
             f"command <code>{e(str(summary.get('command') or ''))}</code></p>",
             (f"<p><b>{e(summary['synthetic']['label'].capitalize())}.</b></p>"
              if summary.get("synthetic") else ""),
             "<h2>Verdict</h2><ul>"
             + "".join(f"<li>{e(s)}</li>" for s in (summary.get("words") or [])[:n_reg])
             + "</ul>"]
    if v.get("caveats"):
        parts.append("<div class='banner'><b>Caveats</b><ul>"
                     + "".join(f"<li>{e(c)}</li>" for c in v["caveats"]) + "</ul></div>")
    if png:
        parts.append(f"<img alt='verdict' src='data:image/png;base64,"
                     f"{base64.b64encode(png).decode()}'>")
    parts += ["<h2>Per deployment</h2>", _html_table(*capacity_rows(summary)),
              "<h2>Per load regime</h2>", _html_table(*regime_rows(summary))]
    if plan:
        parts += [f"<h2>Capacity plan: {plan['target_reviews_per_s']:,.0f} reviews/s"
                  + (f" at p99 ≤ {plan['slo_p99_ms']:,.0f} ms" if plan.get("slo_p99_ms") else "")
                  + "</h2>", _html_table(*plan_rows(summary)),
                  "<ul>" + "".join(f"<li>{e(p['sentence'])}</li>"
                                   for p in plan["modes"].values()) + "</ul>",
                  "<p><b>Assumptions</b></p><ul>"
                  + "".join(f"<li>{e(a)}</li>" for a in plan.get("assumptions") or []) + "</ul>"]
    if v.get("rules"):
        parts += ["<h2>The article's rules</h2><ul>"
                  + "".join(f"<li><i>{e(r['rule'])}</i>: <b>{e(r['finding'])}</b>. "
                            f"{e(r['text'])}</li>" for r in v["rules"]) + "</ul>"]
    parts.append("</body></html>")
    return "\n".join(parts)


@dataclass
class VerdictFiles:
    summary_json: Path
    summary_md: Path
    report: Path
    chart: Path | None
    summary: dict[str, Any]


def build_verdict_report(run_dir: str | Path, out_dir: str | Path | None = None, *,
                         target_reviews_per_s: float | None = None,
                         slo_p99_ms: float | None = None) -> VerdictFiles:
    """Write summary.json, summary.md, charts/verdict.png and report.html into the folder (or
    ``out_dir``: another target or SLO planned from the same measurements, kept apart)."""
    from .verdict_axis import build_axis_report, is_axis
    from .verdict_chart import fig_verdict

    if is_axis(json.loads((Path(run_dir) / "meta.json").read_text())):
        return build_axis_report(run_dir, out_dir)   # a cost axis: a verdict per sub-folder
    vr = load_verdict(run_dir)
    summary = build_summary(vr, target_reviews_per_s=target_reviews_per_s,
                            slo_p99_ms=slo_p99_ms)
    return write_files(Path(out_dir) if out_dir else vr.path, summary,
                       summary_markdown(summary), fig_verdict(summary), "verdict.png",
                       lambda png: render_html(summary, png))


def write_files(out: Path, summary: dict, markdown: str, fig, chart_name: str,
                html_of) -> VerdictFiles:
    """summary.json, summary.md, charts/<chart_name> (when there is a chart) and report.html
    (``html_of(png or None)``): one writer for a verdict and a cost axis alike."""
    from .charts import png_bytes

    out.mkdir(parents=True, exist_ok=True)
    js = out / "summary.json"
    js.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    md = out / "summary.md"
    md.write_text(markdown)
    chart = png = None
    if fig is not None:
        (out / "charts").mkdir(exist_ok=True)
        chart = out / "charts" / chart_name
        png = png_bytes(fig)
        chart.write_bytes(png)
    report = out / "report.html"
    report.write_text(html_of(png), encoding="utf-8")
    return VerdictFiles(js, md, report, chart, summary)

