"""One self-contained HTML report per run (images embedded), plus summary.json/.md and charts/.

Reads nothing but the run folder, so ``python -m analysis report RUN_DIR`` works on any machine
that has the folder. A run with a mode missing is reported for what it has and flagged.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import charts
from .rundir import load_run
from .verdict import run_verdict
from .summary import (RunAnalysis, analyse, broker_lines, caveats, error_table, headline_table,
                      latency_table, load_line, recovery_table, repeats_caption, repeats_table,
                      status_line, sweep_table, workers_lines, write_summary)

HOW_TO_READ = """
<p><b>How to read this.</b> Both deployments serve the same model on the same cores and receive the
same workload (the scenario below), one after the other; each mode is measured over its own window (after a shaded warm-up, up to the
dotted line). <i>Successful throughput</i> is the number of requests due in the window that got an
answer, divided by the window's length: failed, timed-out and retried requests add nothing.
<i>Latency</i> counts from when a request was <i>due</i> (not when the client managed to send it), so
queueing in an overloaded service is not hidden; the service view (from the actual send) is shown
dotted in the CDF. <i>Throughput CV</i> (std ÷ mean of the per-second series) says how steady the
service was: the article's "0.5k vs 5k" spread. <i>Retry amplification</i> is attempts ÷ requests:
above 1 the clients are adding load to a struggling service. <i>Efficiency</i> is reviews/s against
what the model alone can do on the service's cores (the ceiling: the best of short tries right
before and right after the mode, at the batch size it calls the model with; its noise is the tries'
spread, and a mode above the ceiling by more than that noise is named under Caveats). Ratios are stream ÷ REST: above 1
is better for throughput and efficiency, below 1 is better for latency, errors and CV. Dashed
vertical lines are injected faults (labelled with the mode, the kind and the time to recover; the
tinted band lasts until the killed worker was back, or the pause ended). <i>Recovery</i> is the
first time after a fault from which the per-second successful throughput stays at ≥ 90 % of its
pre-fault median for 3 s in a row. <i>Lost / retried / duplicated</i> count the requests around a
fault (due before the recovery run ended, settled after the fault struck): lost never got an ok
answer, retried needed more than one attempt, duplicated were answered more than once (the
stream's at-least-once delivery; the driver keeps the first answer).</p>
"""

WORKERS_NOTE = ("Each answer names the worker process that served it (<hostname>/<pid>) and the "
                "driver counts them, so this shows whether a scale-out (docker compose up "
                "--scale stream=N, or more service processes) took effect and how evenly the "
                "answers were spread, even when the bench only attached to the deployment.")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
.banner{background:#fff3cd;border:1px solid #e0c060;padding:.6em 1em;border-radius:4px}
.ok{background:#e7f5e7;border-color:#8c8}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
.rest{color:#D55E00}.stream{color:#0072B2}small{color:#666}
"""


@dataclass
class ReportFiles:
    report: Path
    summary_json: Path
    summary_md: Path
    charts: dict[str, Path]
    summary: dict[str, Any]


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists of scalars are joined, other lists JSON-dumped."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(d, list) and all(not isinstance(x, (dict, list)) for x in d):
        out[prefix[:-1]] = ", ".join(str(x) for x in d)
    elif isinstance(d, list):
        out[prefix[:-1]] = json.dumps(d)
    else:
        out[prefix[:-1]] = d
    return out


def kv_table(d: Any, key: str = "setting") -> str:
    flat = flatten(d or {})
    if not flat:
        return "<p><small>none recorded</small></p>"
    df = pd.DataFrame({"value": [("" if v is None else str(v)) for v in flat.values()]},
                      index=pd.Index(list(flat.keys()), name=key))
    return table_html(df)


def table_html(df: pd.DataFrame) -> str:
    """A DataFrame as an HTML table, its named index as the first column (one header row)."""
    if df.index.name is not None:
        df = df.reset_index()
    return df.to_html(border=0, index=False, na_rep="–")


def _df_html(df: pd.DataFrame, empty: str) -> str:
    return table_html(df) if len(df) else f"<p><small>{html.escape(empty)}</small></p>"


def render_html(ra: RunAnalysis, summary: dict[str, Any], pngs: dict[str, bytes]) -> str:
    run, meta = ra.run, ra.run.meta
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>rest-vs-stream · {e(run.scenario_name)} · {e(run.run_id)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>rest-vs-stream · scenario <code>{e(run.scenario_name)}</code></h1>",
        f"<p>run <code>{e(run.run_id)}</code> · created {e(str(meta.get('created_utc', '?')))} · "
        f"commit <code>{e(str(meta.get('git_commit', '?'))[:12])}</code> · {e(run.machine)}</p>",
    ]
    verdict = run_verdict(summary)   # every report opens with its verdict in words
    if verdict:
        parts.append(f"<p><b>{e(verdict)}</b></p>")
    if run.complete:
        parts.append("<p class='banner ok'>Run complete.</p>")
    else:
        items = "".join(f"<li>{e(n)}</li>" for n in run.notes) or "<li>meta.json marks it incomplete</li>"
        parts.append(f"<div class='banner'><b>{e(status_line(summary))}</b>: the figures below cover "
                     f"only what was recorded.<ul>{items}</ul></div>")
    load = load_line(summary)
    if load:
        parts.append(f"<p><b>Load:</b> {e(load)}.</p>")
    parts += [HOW_TO_READ, "<h2>Headline</h2>",
              table_html(headline_table(summary))]
    reps = repeats_table(summary)
    if len(reps):
        parts += ["<h2>Repeats</h2>", f"<p><small>{e(repeats_caption(summary))}</small></p>",
                  table_html(reps)]
    cav = caveats(summary)
    if cav:
        parts.append("<div class='banner'><b>Caveats</b><ul>"
                     + "".join(f"<li>{e(c)}</li>" for c in cav) + "</ul></div>")
    brokers = broker_lines(summary)
    if brokers:
        parts += ["<h2>Broker</h2>", "<ul>" + "".join(f"<li>{e(b)}</li>" for b in brokers)
                  + "</ul>"]
    workers = workers_lines(summary)
    if workers:
        parts += ["<h2>Workers</h2>", f"<p><small>{e(WORKERS_NOTE)}</small></p>",
                  "<ul>" + "".join(f"<li>{e(w)}</li>" for w in workers) + "</ul>"]
    if "summary" in pngs:
        parts.append(_img(pngs["summary"], "headline metrics"))
    parts.append("<h2>Over time</h2>")
    for name, data in pngs.items():
        if name != "summary":
            parts.append(_img(data, name))
    parts += ["<h2>Latency percentiles</h2>", _df_html(latency_table(summary), "no successful request"),
              "<h2>Errors by kind</h2>", _df_html(error_table(summary), "no errors"),
              "<h2>Recovery after faults</h2>",
              _df_html(recovery_table(summary), "no fault was injected in this run")]
    sweep = sweep_table(summary)
    if len(sweep):
        parts += ["<h2>Rate steps: maximum sustainable throughput</h2>", _df_html(sweep, "")]
    parts.append("<h2>Modes: windows and settings</h2>")
    for name in ra.order:
        ma = ra.modes.get(name)
        if ma is None:
            parts.append(f"<h3 class='{name}'>{name}: missing</h3>")
            continue
        mm = dict(ma.data.meta)
        settings = mm.pop("settings", {})
        mm.pop("faults", None)
        parts += [f"<h3 class='{name}'>{name}{'' if ma.data.complete else ' (incomplete)'}</h3>",
                  kv_table(mm, "mode field"), kv_table(settings, "setting")]
    parts += ["<h2>Scenario</h2>", kv_table(meta.get("scenario"), "scenario field"),
              "<h2>Machine, versions, model, ceiling</h2>",
              kv_table({"machine": meta.get("machine"), "versions": meta.get("versions"),
                        "model": meta.get("model"), "ceiling": meta.get("ceiling") or {
                            n: {k: (ma.data.meta.get("ceiling") or {}).get(k)
                                for k in ("best", "noise", "batch", "cpus")}
                            for n, ma in ra.modes.items()}}, "field"),
              f"<p><small>{e(run.caption)} · generated by <code>python -m analysis report</code></small></p>",
              "</body></html>"]
    return "\n".join(parts)


def _img(data: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"


def build_report(run_dir: str | Path, out_dir: str | Path | None = None) -> ReportFiles:
    """Analyse the run folder and write report.html, summary.json, summary.md and charts/*.png."""
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir else run.path
    ra = analyse(run)
    for rep in ra.repeats:  # each repeat keeps its own summary, as a single run would
        write_summary(rep, rep.run.path if out_dir is None else out / rep.run.path.name)
    js, md, summary = write_summary(ra, out)
    chart_paths = charts.render_charts(ra, out / "charts")
    pngs = {name: p.read_bytes() for name, p in chart_paths.items()}
    report = out / "report.html"
    report.write_text(render_html(ra, summary, pngs), encoding="utf-8")
    return ReportFiles(report, js, md, chart_paths, summary)
