"""Did HEAD regress against BASE? A threshold per metric *and* a statistical test on per-window samples.

A single headline number is noisy, so a metric only counts as a regression when (1) it moved the
wrong way by more than its relative threshold and (2) its per-window samples (per-second
successful throughput, per-10 s p99, ...) differ significantly (two-sided Mann-Whitney U, p <
alpha) in the same direction. If a side is only a summary.json (no request tables), the test is
impossible and the verdict falls back to the threshold alone, which the output says.

By default only within-run ratios and efficiencies gate the exit code (absolute req/s move 20-30 %
between machines); absolute figures are shown for information. Exit 1 = a gated regression.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu

from .rundir import MODES, load_run
from .summary import RunAnalysis, analyse, build_summary, dig

DEFAULT_ALPHA = 0.01


@dataclass(frozen=True)
class MetricSpec:
    key: str                 # dotted path in summary.json
    higher_is_better: bool
    gate: bool               # decides the exit code by default
    threshold: float         # relative change that matters (0.1 = 10 %)


def default_specs() -> list[MetricSpec]:
    specs = [
        MetricSpec("ratios.successful_throughput", True, True, 0.10),
        MetricSpec("ratios.reviews_per_s", True, True, 0.10),
        *(MetricSpec(f"modes.{m}.efficiency", True, True, 0.10) for m in MODES),
        MetricSpec("ratios.latency_ms.p99", False, False, 0.25),
    ]
    for m in MODES:
        specs += [
            MetricSpec(f"modes.{m}.successful_throughput", True, False, 0.10),
            MetricSpec(f"modes.{m}.reviews_per_s", True, False, 0.10),
            MetricSpec(f"modes.{m}.latency_ms.p99", False, False, 0.25),
            MetricSpec(f"modes.{m}.error_rate", False, False, 0.10),
            MetricSpec(f"modes.{m}.throughput_cv", False, False, 0.25),
        ]
    return specs


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
    if "rest" in per and "stream" in per:
        for k in ("successful_throughput", "reviews_per_s", "latency_ms.p99"):
            r, s = per["rest"][k], per["stream"][k]
            n = min(len(r), len(s))
            with np.errstate(divide="ignore", invalid="ignore"):
                q = s[:n] / r[:n]
            out[f"ratios.{k}"] = q[~np.isnan(q)]
    return out


def load_side(path: str | Path, label: str) -> Side:
    """A run folder (full analysis + samples) or a summary.json (summary only)."""
    p = Path(path)
    if p.is_file():
        return Side(label, json.loads(p.read_text()), None)
    has_tables = any((p / m / "requests.parquet").exists() for m in MODES)
    if p.is_dir() and not has_tables and (p / "summary.json").exists():
        return Side(label, json.loads((p / "summary.json").read_text()), None)
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


def judge(spec: MetricSpec, base: Side, head: Side, alpha: float) -> Row:
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
    if worse:
        agree = sign * shift <= 0          # samples moved the same (bad) way
        verdict = ("REGRESSION" if spec.gate else "worse") if significant and agree \
            else "worse, not significant"
    elif better:
        verdict = "improved" if significant else "better, not significant"
    else:
        verdict = "unchanged"
    return Row(spec.key, bv, hv, ch, p, verdict, spec.gate, spec.threshold)


def compare(base: Side, head: Side, *, thresholds: dict[str, float] | None = None,
            gates: list[str] | None = None, alpha: float = DEFAULT_ALPHA,
            specs: list[MetricSpec] | None = None) -> Comparison:
    """Judge every metric; ``thresholds``/``gates`` match a full key or its last dotted part(s)."""
    def matches(key: str, name: str) -> bool:
        return key == name or key.endswith("." + name)

    specs = specs or default_specs()
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
    rows = [judge(s, base, head, alpha) for s in out]
    for r in rows:
        if r.gate and r.verdict == "n/a":
            notes.append(f"{r.key}: cannot be judged (missing on one side)")
    return Comparison(rows, notes, alpha)


# --------------------------------------------------------------------------------------------
# Output


def _f(x: float | None, spec: str = "{:,.4g}") -> str:
    if x is None:
        return "–"
    if math.isinf(x):
        return "+inf" if x > 0 else "-inf"
    return spec.format(x)


def format_table(cmp: Comparison, markdown: bool = False) -> str:
    head = ["metric", "base", "head", "change %", "p-value", "verdict"]
    body = [[r.key + ("" if r.gate else " (info)"), _f(r.base), _f(r.head),
             _f(None if r.change is None else 100 * r.change, "{:+.1f}"),
             _f(r.p_value, "{:.2g}"), r.verdict] for r in cmp.rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
    else:
        w = [max(len(x) for x in col) for col in zip(head, *body)]
        line = lambda cells: "  ".join(c.ljust(n) if i in (0, 5) else c.rjust(n)  # noqa: E731
                                       for i, (c, n) in enumerate(zip(cells, w)))
        lines = [line(head), "  ".join("-" * n for n in w)] + [line(b) for b in body]
    tail = [f"alpha = {cmp.alpha:g} (two-sided Mann-Whitney U on per-window samples); "
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
