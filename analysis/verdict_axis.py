"""A ``make verdict COST_US=...`` folder, read and reported: the verdict along a synthetic
cost axis.

The folder (bench/verdict.py ``run_axis`` writes it): ``meta.json`` with ``"kind": "verdict"`` and
an ``axis`` block (``costs_us``, ``dirs``), and per cost a verdict folder of its own
(``cost-<µs>us/``, reported by analysis/verdict_run.py). From those sub-folders alone this module
writes the axis's summary.json (``verdict.cost_axis``: each cost's regimes and capacities;
``verdict.changes``: where each regime's winner changes), summary.md, charts/verdict-cost.png and
report.html. Every figure is labelled synthetic: the cost is a calibrated busy loop, not a model.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import metrics as mx
from . import verdict as vd
from .figures import RATIO_SPEC

#: What a regime keeps on the axis (its sentence and interval source stay in the cost's folder).
_REGIME_KEYS = ("key", "load", "metric", "unit", "better", "values", "winner", "ratio", "ci95",
                "clear")
_CAPACITY_KEYS = ("saturated_reviews_per_s", "slo_reviews_per_s", "latency_ms", "service_cpu",
                  "broker_cpu", "others_cpu")


def is_axis(meta: Mapping[str, Any]) -> bool:
    return bool((meta.get("axis") or {}).get("costs_us"))


def cost_entry(cost_us: float, sub: str, summary: Mapping[str, Any] | None,
               meta: Mapping[str, Any] | None, pair: tuple[str, str] | None) -> dict[str, Any]:
    """One cost of the axis from its folder's summary.json (None: not measured) and meta.json."""
    model = (meta or {}).get("model") or {}
    measured = (model.get("synthetic_cost") or {}).get("measured_batched_us")
    if not summary:
        return {"cost_us": cost_us, "dir": sub, "complete": False, "measured_us": measured,
                "regimes": [], "capacity": {}, "advantage": {}, "caveats": []}
    v = summary.get("verdict") or {}
    regs = [{k: r.get(k) for k in _REGIME_KEYS} for r in v.get("regimes") or []]
    adv = {}
    if pair:
        base, chal = pair
        for r in regs:
            val, lo, hi = vd.advantage(r, chal, base)
            # an outright win (the other served nothing) has no finite ratio: flagged instead
            adv[r["key"]] = {"value": val, "ci95": [lo, hi],
                             "outright": val is not None and math.isinf(val)}
    return {"cost_us": cost_us, "dir": sub, "complete": bool(summary.get("complete")),
            "measured_us": measured, "regimes": regs,
            "capacity": {m: {k: c.get(k) for k in _CAPACITY_KEYS}
                         for m, c in (v.get("capacity") or {}).items()},
            "advantage": adv, "caveats": list(v.get("caveats") or []),
            "wall_s": summary.get("wall_s")}


def axis_block(meta: Mapping[str, Any], entries: Sequence[Mapping[str, Any]],
               pair: tuple[str, str] | None) -> dict[str, Any]:
    """summary.json's ``verdict`` of an axis folder."""
    asked = meta.get("verdict") or {}
    return {"synthetic": True, "label": (meta.get("axis") or {}).get("label") or vd.SYNTHETIC,
            "modes": list(meta.get("order") or []),
            "pair": list(pair) if pair else None,
            "slo": {"p99_ms": asked.get("slo_p99_ms"),
                    "max_error_rate": asked.get("max_error_rate")},
            "phases": meta.get("phases"),
            "cost_axis": [dict(e) for e in entries],
            "changes": [r.to_dict() for r in vd.axis_regimes(entries)]}


def axis_words(block: Mapping[str, Any]) -> list[str]:
    """The axis in words: what the cost is, then one sentence per regime, then the caveats."""
    costs = [e["cost_us"] for e in block.get("cost_axis") or []]
    measured = [(e["cost_us"], e.get("measured_us")) for e in block.get("cost_axis") or []
                if e.get("measured_us") is not None and e["cost_us"] > 0]
    ph = block.get("phases") or {}
    out = [f"Synthetic model cost: +{', '.join(f'{c:,.0f}' for c in costs)} µs of CPU per input "
           "(a calibrated busy loop added to the model in every process, not a real model)"
           + (", measured in the bench's process at " + ", ".join(
               f"{m:,.0f}" for _, m in measured) + " µs per input in batches" if measured else "")
           + (f"; each phase shortened for the axis (saturated {ph.get('saturate_s'):g} s, "
              f"open-loop steps {ph.get('open_step_s'):g} s, overload {ph.get('overload_s'):g} s)"
              if ph.get("saturate_s") else "") + "."]
    if block.get("pair"):
        out += [c["sentence"] for c in block.get("changes") or []]
    else:   # one deployment: nothing to win, but what the cost did to it
        for m in block.get("modes") or []:
            rates = [(e["cost_us"], ((e.get("capacity") or {}).get(m) or {})
                      .get("saturated_reviews_per_s")) for e in block.get("cost_axis") or []]
            out.append(f"Only {vd.label(m)} was measured, so no winner to follow; its saturated "
                       "rate: " + ", ".join(f"{vd._fmt(r)} reviews/s at {vd.cost_text(c)}"
                                            for c, r in rates) + f" ({vd.SYNTHETIC}).")
    seen = set()
    for e in block.get("cost_axis") or []:
        for c in e.get("caveats") or []:
            key = c.split(":")[0] + (" noisy" if "other processes" in c else "")
            if key in seen:
                continue
            seen.add(key)
            out.append(f"Caveat (at {vd.cost_text(e['cost_us'])} and maybe others): {c}")
        if not e.get("complete"):
            out.append(f"At {vd.cost_text(e['cost_us'])} the verdict is incomplete "
                       f"(see {e['dir']}/meta.json).")
    return out


def axis_rows(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per cost (rows) and regime (columns): the winner and the challenger's advantage."""
    v = summary.get("verdict") or {}
    entries = v.get("cost_axis") or []
    keys: dict[str, str] = {}
    for e in entries:
        for r in e["regimes"]:
            keys.setdefault(r["key"], r["load"])
    pair = v.get("pair")
    rows = []
    for e in entries:
        regs = {r["key"]: r for r in e["regimes"]}
        cap = e.get("capacity") or {}
        row = [f"{vd.cost_text(e['cost_us'])} ({vd.SYNTHETIC})",
               ", ".join(f"{vd.label(m)} {vd._fmt(c.get('saturated_reviews_per_s'))}"
                         for m, c in cap.items()) or "–"]
        for k in keys:
            o = vd.outcome(regs.get(k))
            adv = (e.get("advantage") or {}).get(k) or {}
            a = adv.get("value")
            row.append(("–" if o is None else "tie" if o == vd.TIED else vd.label(o))
                       + (" (outright)" if adv.get("outright") else
                          f" {RATIO_SPEC.format(a)}" if a is not None and pair else ""))
        rows.append(row)
    return ["cost per input", "saturated (reviews/s)"] + list(keys.values()), rows


def advantage_note(summary: Mapping[str, Any]) -> str:
    pair = (summary.get("verdict") or {}).get("pair")
    if not pair:
        return "Each cell: the clear winner (tie: its 95 % interval holds 1)."
    b, c = vd.label(pair[0]), vd.label(pair[1])
    return (f"Each cell: the clear winner (tie: its 95 % interval holds 1) and {c}'s advantage "
            f"over {b}: {c}'s successful reviews/s ÷ {b}'s, or for a latency regime {b}'s p99 ÷ "
            f"{c}'s; above 1 {c} is better.")


def _cost_summary(path: Path, rebuild: bool) -> dict[str, Any] | None:
    """A cost folder's summary.json: rebuilt from its measurements (``rebuild``, or when it has
    none), else as written; None when it cannot be analysed."""
    from .verdict_run import build_verdict_report

    if not rebuild and (path / "summary.json").exists():
        return json.loads((path / "summary.json").read_text())
    try:
        return build_verdict_report(path).summary
    except Exception:  # noqa: BLE001 — an unreadable cost is a gap on the axis
        return None


def build_axis_summary(run_dir: Path, meta: Mapping[str, Any], *,
                       rebuild: bool = True) -> dict[str, Any]:
    """The axis folder's summary.json, from each cost folder's summary (``rebuild``: each cost
    folder re-analysed first, as ``python -m analysis report`` does)."""
    axis = meta["axis"]
    entries, pair = [], None
    for cost, sub in zip(axis["costs_us"], axis["dirs"]):
        path = run_dir / sub
        summary = sub_meta = None
        if (path / "meta.json").exists():
            sub_meta = json.loads((path / "meta.json").read_text())
            summary = _cost_summary(path, rebuild)
        if summary and pair is None:
            kinds = {m: c.get("kind") for m, c in
                     ((summary.get("verdict") or {}).get("capacity") or {}).items()}
            pair = vd.axis_pair(list(kinds), kinds)
        entries.append((float(cost), sub, summary, sub_meta))
    block = axis_block(meta, [cost_entry(c, s, sm, mt, pair) for c, s, sm, mt in entries], pair)
    complete = bool(meta.get("complete")) and all(e["complete"] for e in block["cost_axis"])
    return mx.jsonable({
        "kind": "verdict", "scenario": (meta.get("scenario") or {}).get("name"),
        "complete": complete, "run_id": meta.get("run_id"),
        "created_utc": meta.get("created_utc"), "git_commit": meta.get("git_commit"),
        "machine": meta.get("machine"), "placement": meta.get("placement"),
        "command": meta.get("command"), "wall_s": meta.get("wall_s"),
        "missing_modes": [], "verdict": block, "words": axis_words(block)})


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
            + ["| " + " | ".join(r) + " |" for r in rows])


def axis_markdown(summary: Mapping[str, Any]) -> str:
    m = summary.get("machine") or {}
    v = summary.get("verdict") or {}
    lines = [f"### rest-vs-stream · verdict along a synthetic cost axis · "
             f"{'complete' if summary.get('complete') else 'INCOMPLETE'}", "",
             f"run `{summary.get('run_id')}` · {m.get('cpu_model', '?')}, {m.get('cpus', '?')} "
             f"cores, Python {m.get('python', '?')}"
             + (f" · `{summary['command']}`" if summary.get("command") else "")
             + (f" · {summary['wall_s'] / 60:.1f} min" if summary.get("wall_s") else ""), "",
             "**Verdict along the cost axis (synthetic).**", ""]
    lines += [f"- {s}" for s in summary.get("words") or []]
    lines += ["", "![cost axis](charts/verdict-cost.png)", ""]
    head, rows = axis_rows(summary)
    lines += _md_table(head, rows) + ["", advantage_note(summary), ""]
    lines += ["Each cost's full verdict (capacity, latency, overload, plan, rules) is in its "
              "folder: " + ", ".join(f"`{e['dir']}/summary.md`" for e in v.get("cost_axis") or [])
              + "."]
    return "\n".join(lines) + "\n"


def axis_html(summary: Mapping[str, Any], png: bytes | None) -> str:
    from .report import CSS

    e = html.escape
    v = summary.get("verdict") or {}
    head, rows = axis_rows(summary)
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>rest-vs-stream · verdict · cost axis · {e(str(summary.get('run_id')))}"
             "</title>", f"<style>{CSS}</style></head><body>",
             "<h1>rest-vs-stream · which should I use, as the model gets costlier?</h1>",
             f"<p>run <code>{e(str(summary.get('run_id')))}</code> · "
             f"{e(str((summary.get('machine') or {}).get('cpu_model', '?')))} · command "
             f"<code>{e(str(summary.get('command') or ''))}</code> · <b>synthetic cost</b></p>",
             "<h2>Verdict</h2><ul>"
             + "".join(f"<li>{e(s)}</li>" for s in summary.get("words") or []) + "</ul>"]
    if png:
        parts.append(f"<img alt='cost axis' src='data:image/png;base64,"
                     f"{base64.b64encode(png).decode()}'>")
    parts += ["<h2>Per cost</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head)
              + "</tr>" + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>"
                                  for r in rows) + "</table>",
              f"<p>{e(advantage_note(summary))}</p>",
              "<p>Each cost's full verdict: " + ", ".join(
                  f"<a href='{e(x['dir'])}/report.html'>{e(vd.cost_text(x['cost_us']))}</a>"
                  for x in v.get("cost_axis") or []) + ".</p>", "</body></html>"]
    return "\n".join(parts)


def build_axis_report(run_dir: str | Path, out_dir: str | Path | None = None, *,
                      rebuild: bool = True):
    """Write summary.json, summary.md, charts/verdict-cost.png and report.html of an axis
    (``rebuild=False``: from the cost folders' summaries as they are, the bench's own report)."""
    from .verdict_chart import fig_cost_axis
    from .verdict_run import write_files

    path = Path(run_dir)
    meta = json.loads((path / "meta.json").read_text())
    summary = build_axis_summary(path, meta, rebuild=rebuild)
    return write_files(Path(out_dir) if out_dir else path, summary, axis_markdown(summary),
                       fig_cost_axis(summary), "verdict-cost.png",
                       lambda png: axis_html(summary, png))
