"""Did HEAD regress against BASE? A threshold per metric *and* a statistical test on its samples.

A single headline number is noisy, so a metric only counts as a regression when (1) it moved the
wrong way by more than its relative threshold and (2) its per-window samples (per-second
successful throughput, per-10 s p99, ...) differ significantly (two-sided Mann-Whitney U, p <
alpha) in the same direction. If a side is only a summary.json (no request tables), the test is
impossible and the verdict falls back to the threshold alone, which the output says.

When both sides are repeated runs (``--repeat N``), the figures their ``repeats`` block carries
(each mode's reviews/s, p50/p99 and error rate, the reviews/s ratio) are judged on their medians
over the repeats and tested on the repeats themselves, at asv's p < 0.002: per-window samples of
one run share that run's luck, repeats do not. A two-sided Mann-Whitney test cannot reach 0.002
with fewer than 7 samples a side, so then (as asv does) a change counts as significant only when
the two 95 % intervals do not overlap, and the output says so.

By default only within-run ratios and efficiencies gate the exit code (absolute req/s move 20-30 %
between machines); absolute figures are shown for information. Exit 1 = a gated regression.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu

from . import figures as figs
from . import repeats as rp
from .rundir import MODES, load_run
from .summary import (RunAnalysis, analyse, baseline_name, build_summary, dig, mode_names,
                      summary_ratios)

DEFAULT_ALPHA = 0.01


@dataclass(frozen=True)
class MetricSpec:
    key: str                 # dotted path in summary.json
    higher_is_better: bool
    gate: bool               # decides the exit code by default
    threshold: float         # relative change that matters (0.1 = 10 %)


def default_specs(modes: Sequence[str] = MODES, baseline: str | None = None) -> list[MetricSpec]:
    """Every figure analysis.figures marks for compare, each mode's and each ratio to the
    baseline: the gated ones (ratios, then modes) first, then the informational ones."""
    modes = list(modes)
    baseline = baseline or (modes[0] if modes else None)
    others = [m for m in modes if m != baseline]
    places = (("ratios", others, lambda f: f.compare_ratio), ("modes", modes, lambda f: f.compare))
    return [MetricSpec(f"{where}.{m}.{f.key}", bool(f.higher_is_better), judged == "gate",
                       float(f.threshold or 0.0))
            for judged in ("gate", "info") for where, names, how in places
            for m in names for f in figs.FIGURES if how(f) == judged]


# --------------------------------------------------------------------------------------------
# Inputs


@dataclass
class Side:
    """One side of the comparison: its summary, and its per-window samples when it has tables."""

    label: str
    summary: dict[str, Any]
    samples: dict[str, np.ndarray] | None


def window_samples(ra: RunAnalysis) -> dict[str, np.ndarray]:
    """Per-window samples of each comparable metric, from the in-window bins of each mode.

    Ratios pair the two modes' bins by their position in the window (second k of REST with
    second k of the stream); x/0 is +inf (ranks fine), 0/0 is dropped.
    """
    out: dict[str, np.ndarray] = {}
    per: dict[str, dict[str, np.ndarray]] = {}
    for name, ma in ra.modes.items():
        s1 = ma.series.throughput_1s[ma.series.throughput_1s["in_window"]]
        l10 = ma.series.latency_10s[ma.series.latency_10s["in_window"]]
        d = {
            "successful_throughput": s1["ok_per_s"].to_numpy(float),
            "reviews_per_s": s1["reviews_per_s"].to_numpy(float),
            "latency_ms.p99": l10["p99"].to_numpy(float),
        }
        ceil = ma.metrics.ceiling.reviews_per_s
        if ceil:
            d["efficiency"] = d["reviews_per_s"] / ceil
        per[name] = d
        for k, v in d.items():
            out[f"modes.{name}.{k}"] = v[np.isfinite(v)]
    base = ra.baseline
    for name in (n for n in per if n != base and base in per):
        for k in ("successful_throughput", "reviews_per_s", "latency_ms.p99"):
            if k == "successful_throughput" and (ra.ratios.get(name) or {}).get(k) is None:
                continue            # requests of different sizes: not a ratio of like units
            r, s = per[base][k], per[name][k]
            n = min(len(r), len(s))
            with np.errstate(divide="ignore", invalid="ignore"):
                q = s[:n] / r[:n]
            out[f"ratios.{name}.{k}"] = q[~np.isnan(q)]
    return out


def load_side(path: str | Path, label: str) -> Side:
    """A run folder (full analysis + samples) or a summary.json (summary only)."""
    p = Path(path)
    if p.is_file():
        return Side(label, _normalised(json.loads(p.read_text())), None)
    has_tables = any(p.glob("*/requests.parquet")) or \
        any(p.glob(f"{rp.REPEAT_PREFIX}*/*/requests.parquet"))
    if p.is_dir() and not has_tables and (p / "summary.json").exists():
        return Side(label, _normalised(json.loads((p / "summary.json").read_text())), None)
    ra = analyse(load_run(p))
    return Side(label, build_summary(ra), window_samples(ra))


# --------------------------------------------------------------------------------------------
# Verdicts


@dataclass
class Row:
    key: str
    base: float | None
    head: float | None
    change: float | None     # (head - base) / |base|
    p_value: float | None
    verdict: str
    gate: bool
    threshold: float
    samples: str = ""        # what the test ran on: "110 vs 110 windows", "2 vs 2 repeats"


@dataclass
class Comparison:
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    alpha: float = DEFAULT_ALPHA

    @property
    def regressed(self) -> bool:
        return any(r.gate and r.verdict.startswith("REGRESSION") for r in self.rows)


def _num(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if not math.isnan(x) else None


def _change(base: float, head: float) -> float:
    if base == 0:
        return 0.0 if head == 0 else math.copysign(math.inf, head)
    return (head - base) / abs(base)


def _test(b: np.ndarray, h: np.ndarray) -> tuple[float | None, float]:
    """(two-sided Mann-Whitney p, median shift head - base); p None with too few samples."""
    b, h = b[~np.isnan(b)], h[~np.isnan(h)]
    if len(b) < 3 or len(h) < 3:
        return None, 0.0
    fb, fh = b[np.isfinite(b)], h[np.isfinite(h)]
    shift = (np.median(fh) if len(fh) else 0.0) - (np.median(fb) if len(fb) else 0.0)
    if np.array_equal(np.sort(b), np.sort(h)):
        return 1.0, 0.0
    return float(mannwhitneyu(b, h, alternative="two-sided").pvalue), float(shift)


def _normalised(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary written before modes were named (flat stream ÷ rest ratios) in today's shape."""
    return {**summary, "ratios": summary_ratios(summary), "baseline": baseline_name(summary)}


def block_name(key: str, baseline: str = "rest") -> str | None:
    """A compare key's name in the ``repeats`` block: modes.rest.error_rate -> rest.error_rate,
    ratios.stream.reviews_per_s (stream ÷ the baseline) -> stream/<baseline>.reviews_per_s."""
    head, _, rest = key.partition(".")
    if head == "modes":
        return rest
    if head == "ratios":
        mode, _, fig = rest.partition(".")
        return f"{mode}/{baseline}.{fig}"
    return None


def repeat_stat(summary: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The key's entry in a repeated run's ``repeats`` block (None for a single run's windows)."""
    block = summary.get("repeats") or {}
    name = block_name(key, baseline_name(summary))
    if block.get("source") != "repeats" or name is None:
        return None
    st = (block.get("metrics") or {}).get(name)
    return st if st and st.get("samples") else None


def _verdict(spec: MetricSpec, ch: float, significant: bool, agree: bool, how: str = "") -> str:
    sign = 1.0 if spec.higher_is_better else -1.0
    if sign * ch < -spec.threshold:
        return (("REGRESSION" if spec.gate else "worse") + how) if significant and agree \
            else "worse, not significant"
    if sign * ch > spec.threshold:
        return ("improved" + how) if significant else "better, not significant"
    return "unchanged"


def judge_repeats(spec: MetricSpec, rb: dict[str, Any], rh: dict[str, Any], alpha: float) -> Row:
    """Medians over repeats, Mann-Whitney over the repeats when it can reach ``alpha``, else
    asv's fallback: significant only when the 95 % intervals are apart."""
    bv, hv = _num(rb.get("median")), _num(rh.get("median"))
    bs, hs = np.asarray(rb["samples"], float), np.asarray(rh["samples"], float)
    n = f"{len(bs)} vs {len(hs)} repeats"
    if bv is None or hv is None:
        return Row(spec.key, bv, hv, None, None, "n/a", spec.gate, spec.threshold, n)
    ch = _change(bv, hv)
    sign = 1.0 if spec.higher_is_better else -1.0
    if rp.can_reach(len(bs), len(hs), alpha):
        p, shift = _test(bs, hs)
        significant, how = p is not None and p < alpha, ""
    else:
        p, shift = None, hv - bv
        significant = not rp.intervals_overlap(rb.get("ci95") or [None, None],
                                               rh.get("ci95") or [None, None])
        how = " (intervals)"
    verdict = _verdict(spec, ch, significant, sign * shift <= 0, how)
    return Row(spec.key, bv, hv, ch, p, verdict, spec.gate, spec.threshold, n)


def judge(spec: MetricSpec, base: Side, head: Side, alpha: float,
          repeats_alpha: float = rp.REPEATS_ALPHA) -> Row:
    rb, rh = repeat_stat(base.summary, spec.key), repeat_stat(head.summary, spec.key)
    if rb is not None and rh is not None:
        return judge_repeats(spec, rb, rh, min(alpha, repeats_alpha))
    bv, hv = _num(dig(base.summary, spec.key)), _num(dig(head.summary, spec.key))
    if bv is None or hv is None:
        return Row(spec.key, bv, hv, None, None, "n/a", spec.gate, spec.threshold)
    ch = _change(bv, hv)
    sign = 1.0 if spec.higher_is_better else -1.0
    worse = sign * ch < -spec.threshold
    better = sign * ch > spec.threshold
    bs = (base.samples or {}).get(spec.key)
    hs = (head.samples or {}).get(spec.key)
    if bs is None or hs is None:
        if worse:
            verdict = ("REGRESSION" if spec.gate else "worse") + " (threshold only)"
        else:
            verdict = "improved (threshold only)" if better else "unchanged"
        return Row(spec.key, bv, hv, ch, None, verdict, spec.gate, spec.threshold)
    p, shift = _test(bs, hs)
    significant = p is not None and p < alpha
    verdict = _verdict(spec, ch, significant, sign * shift <= 0)   # agree: moved the same way
    return Row(spec.key, bv, hv, ch, p, verdict, spec.gate, spec.threshold,
               f"{len(bs)} vs {len(hs)} windows")


def compare(base: Side, head: Side, *, thresholds: dict[str, float] | None = None,
            gates: list[str] | None = None, alpha: float = DEFAULT_ALPHA,
            specs: list[MetricSpec] | None = None) -> Comparison:
    """Judge every metric; ``thresholds``/``gates`` match a full key or its last dotted part(s)."""
    def matches(key: str, name: str) -> bool:
        return key == name or key.endswith("." + name)

    if specs is None:
        names = list(dict.fromkeys([*mode_names(base.summary), *mode_names(head.summary)]))
        specs = default_specs(names or MODES, baseline_name(head.summary))
    out: list[MetricSpec] = []
    for s in specs:
        thr = s.threshold
        for name, v in (thresholds or {}).items():
            if matches(s.key, name):
                thr = v
        gate = s.gate or any(matches(s.key, g) for g in gates or [])
        out.append(MetricSpec(s.key, s.higher_is_better, gate, thr))
    notes = []
    for side in (base, head):
        if side.samples is None:
            notes.append(f"{side.label} is a summary.json only (no request tables): its verdicts use "
                         "thresholds only, no statistical test.")
        if not side.summary.get("complete", False):
            notes.append(f"{side.label} run is incomplete "
                         f"(missing: {', '.join(side.summary.get('missing_modes') or []) or 'see its notes'}).")
    if base.summary.get("scenario") != head.summary.get("scenario"):
        notes.append(f"scenarios differ: {base.summary.get('scenario')!r} vs {head.summary.get('scenario')!r}")
    notes += repeat_notes(base, head, min(alpha, rp.REPEATS_ALPHA))
    rows = [judge(s, base, head, alpha) for s in out]
    for r in rows:
        if r.gate and r.verdict == "n/a":
            notes.append(f"{r.key}: cannot be judged (missing on one side)")
    return Comparison(rows, notes, alpha)


def repeat_notes(base: Side, head: Side, alpha: float) -> list[str]:
    """What the repeats changed in the verdicts, in words."""
    nb, nh = (((s.summary.get("repeats") or {}).get("n")
               if (s.summary.get("repeats") or {}).get("source") == "repeats" else None)
              for s in (base, head))
    if nb is None and nh is None:
        return []
    if nb is None or nh is None:
        one = base.label if nb else head.label
        return [f"only {one} is a repeated run: its repeats are not compared with the other's "
                "time windows; per-window samples are used as for single runs."]
    out = [f"repeats: {base.label} {nb}, {head.label} {nh}: reviews/s, p50/p99, error rates and "
           f"the reviews/s ratio are judged on their medians over the repeats, at p < {alpha:g}."]
    if not rp.can_reach(nb, nh, alpha):
        out.append(f"fewer than 7 repeats a side ({nb} vs {nh}): Mann-Whitney cannot reach p < "
                   f"{alpha:g} (asv's rule: p < 0.002 needs >= 7 samples a side), so those rows "
                   "count as significant only when their 95 % intervals do not overlap "
                   "('intervals'); repeat with REPEAT=7 or more for a test.")
    return out


# --------------------------------------------------------------------------------------------
# Output


def _f(x: float | None, spec: str = "{:,.4g}") -> str:
    if x is None:
        return "–"
    if math.isinf(x):
        return "+inf" if x > 0 else "-inf"
    return spec.format(x)


def format_table(cmp: Comparison, markdown: bool = False) -> str:
    head = ["metric", "base", "head", "change %", "p-value", "verdict", "samples"]
    body = [[r.key + ("" if r.gate else " (info)"), _f(r.base), _f(r.head),
             _f(None if r.change is None else 100 * r.change, "{:+.1f}"),
             _f(r.p_value, "{:.2g}"), r.verdict, r.samples or "–"] for r in cmp.rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
    else:
        w = [max(len(x) for x in col) for col in zip(head, *body)]
        line = lambda cells: "  ".join(c.ljust(n) if i in (0, 5, 6) else c.rjust(n)  # noqa: E731
                                       for i, (c, n) in enumerate(zip(cells, w)))
        lines = [line(head), "  ".join("-" * n for n in w)] + [line(b) for b in body]
    tail = [f"alpha = {cmp.alpha:g} (two-sided Mann-Whitney U on per-window samples; "
            f"{min(cmp.alpha, rp.REPEATS_ALPHA):g} on repeats); "
            "a gated metric regresses only beyond its threshold AND significantly."]
    tail += [f"note: {n}" for n in cmp.notes]
    tail.append("RESULT: REGRESSION" if cmp.regressed else "RESULT: no significant regression")
    return "\n".join(lines + [""] + tail)


def parse_thresholds(items: list[str] | None) -> dict[str, float]:
    out = {}
    for item in items or []:
        name, sep, val = item.partition("=")
        if not sep:
            raise ValueError(f"--threshold wants metric=fraction (e.g. efficiency=0.1), got {item!r}")
        out[name.strip()] = float(val)
    return out


def run_compare(base: str | Path, head: str | Path, *, thresholds: dict[str, float] | None = None,
                gates: list[str] | None = None, alpha: float = DEFAULT_ALPHA,
                markdown: bool = False) -> tuple[int, str, Comparison]:
    """(exit code, printable table, comparison) for two paths: the CLI's whole job."""
    cmp = compare(load_side(base, "BASE"), load_side(head, "HEAD"), thresholds=thresholds,
                  gates=gates, alpha=alpha)
    return (1 if cmp.regressed else 0), format_table(cmp, markdown), cmp
