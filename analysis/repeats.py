"""How much a headline figure moves: its median, range and 95 % interval over repeats.

One run is one sample: on a shared machine REST's p99 moved 10 → 25 → 12 ms between identical
runs, so a single figure says little about the next one. A repeated run (``--repeat N``) runs the
modes interleaved (rest, stream; stream, rest; ...) so that a slow drift of the machine falls on
both modes alike, and each figure is summarised over the repeats. A single run has nothing to
repeat over, so it is cut into time windows instead: that shows how steady the run was, not how
repeatable, and the block says which it is.

Pure functions, no I/O; the bootstrap is seeded, so the same samples give the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import figures as figs

#: Repeat k (1-based) of a repeated run lives in ``<run>/repeat-<k>/``, a run folder of its own.
REPEAT_PREFIX = "repeat-"
#: Seed of every bootstrap: the same samples always give the same interval.
BOOTSTRAP_SEED = 0
BOOTSTRAP_RESAMPLES = 4000
#: A single run is cut into this many equal time windows (fewer if they would be under 1 s).
WINDOWS = 10
#: Significance over repeats, as asv uses it: a difference must reach p < 0.002.
REPEATS_ALPHA = 0.002



@dataclass(frozen=True, slots=True)
class Stat:
    """One figure over its samples (None everywhere when it has none)."""

    median: float | None
    min: float | None
    max: float | None
    ci95: tuple[float | None, float | None]
    samples: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.min, "max": self.max,
                "ci95": list(self.ci95), "samples": list(self.samples)}


@dataclass(frozen=True, slots=True)
class RepeatsBlock:
    """summary.json's ``repeats``: n runs; samples are repeats, or time windows when n == 1."""

    n: int
    source: str                     # "repeats" | "windows"
    metrics: dict[str, Stat]
    windows: int | None = None      # windows per run (source "windows")
    seed: int = BOOTSTRAP_SEED

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "source": self.source}
        if self.windows is not None:
            out["windows"] = self.windows
        out["bootstrap"] = {"seed": self.seed, "resamples": BOOTSTRAP_RESAMPLES,
                            "statistic": "median"}
        out["metrics"] = {k: v.to_dict() for k, v in self.metrics.items()}
        return out


# --------------------------------------------------------------------------------------------
# Which runs, in which order


def interleaved(modes: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The mode order of each of ``n`` repeats: as given, then reversed, and so on (ABBA...), so a
    mode is not always the one that runs on a warmer (or more crowded) machine."""
    if n < 1:
        raise ValueError(f"repeat count must be >= 1, got {n}")
    fwd = tuple(modes)
    return [fwd if k % 2 == 0 else fwd[::-1] for k in range(n)]


def window_count(duration_s: float, most: int = WINDOWS) -> int:
    """How many equal windows a run of ``duration_s`` is cut into: ``most``, each ≥ 1 s."""
    return max(1, min(most, int(math.floor(duration_s + 1e-9))))


# --------------------------------------------------------------------------------------------
# Figures of one sample


def mode_figures() -> list[str]:
    """Per mode: the figures summarised (dotted names as in metrics.headline)."""
    return [f.key for f in figs.FIGURES if f.repeated]


def ratio_name(mode: str, first: str) -> str:
    return f"{mode}/{first}.{figs.repeated_ratio().key}"


def figures(headlines: Mapping[str, Mapping[str, float | None]], first: str,
            modes: Iterable[str] | None = None) -> dict[str, float | None]:
    """One sample's figures: ``<mode>.<figure>`` per mode, ``<mode>/<first>.reviews_per_s`` per
    other mode (None when either side is missing or the first mode served nothing)."""
    modes = list(modes) if modes is not None else list(headlines)
    out: dict[str, float | None] = {}
    for m in modes:
        h = headlines.get(m) or {}
        for f in mode_figures():
            out[f"{m}.{f}"] = _num(h.get(f))
    ratio = figs.repeated_ratio().key
    base = _num((headlines.get(first) or {}).get(ratio))
    for m in modes:
        if m == first:
            continue
        v = _num((headlines.get(m) or {}).get(ratio))
        out[ratio_name(m, first)] = v / base if v is not None and base else None
    return out


# --------------------------------------------------------------------------------------------
# Statistics


def bootstrap_ci(values: Sequence[float], *, seed: int = BOOTSTRAP_SEED,
                 resamples: int = BOOTSTRAP_RESAMPLES, level: float = 0.95
                 ) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the median. A fresh generator per call, so an interval
    depends on its samples and the seed only, not on what was computed before it."""
    v = np.asarray([x for x in values if _num(x) is not None], dtype=float)
    if v.size == 0:
        return None, None
    if v.size == 1:
        return float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    meds = np.median(v[rng.integers(0, v.size, size=(resamples, v.size))], axis=1)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(meds, [tail, 100 - tail])
    return float(lo), float(hi)


def stat(values: Iterable[float | None], *, seed: int = BOOTSTRAP_SEED) -> Stat:
    """Median, min, max and bootstrap 95 % interval of the defined values (None and NaN skipped)."""
    v = tuple(float(x) for x in values if _num(x) is not None)
    if not v:
        return Stat(None, None, None, (None, None), ())
    return Stat(float(np.median(v)), min(v), max(v), bootstrap_ci(v, seed=seed), v)


def summarise(samples: Sequence[Mapping[str, float | None]], *, source: str, n: int | None = None,
              windows: int | None = None, seed: int = BOOTSTRAP_SEED) -> RepeatsBlock:
    """Every figure named in ``samples`` (one mapping per repeat, or per window) summarised."""
    if source not in ("repeats", "windows"):
        raise ValueError(f"source must be 'repeats' or 'windows', not {source!r}")
    names: list[str] = []
    for s in samples:
        names += [k for k in s if k not in names]
    metrics = {k: stat((s.get(k) for s in samples), seed=seed) for k in names}
    runs = n if n is not None else (len(samples) if source == "repeats" else 1)
    return RepeatsBlock(runs, source, metrics, windows, seed)


def representative(values: Sequence[float | None]) -> int:
    """Index of the sample closest to the median of ``values`` (the first on a tie, or when
    nothing is defined): the repeat whose tables the report draws."""
    defined = [(i, float(x)) for i, x in enumerate(values) if _num(x) is not None]
    if not defined:
        return 0
    med = float(np.median([x for _, x in defined]))
    return min(defined, key=lambda ix: (abs(ix[1] - med), ix[0]))[0]


def min_p_two_sided(n: int, m: int) -> float:
    """The smallest two-sided p an exact Mann-Whitney U test can give with n and m samples
    (every value of one side above every value of the other): 2 / C(n + m, min(n, m))."""
    if n < 1 or m < 1:
        return 1.0
    return min(1.0, 2.0 / math.comb(n + m, min(n, m)))


def can_reach(n: int, m: int, alpha: float = REPEATS_ALPHA) -> bool:
    """Whether n vs m samples could ever be significant at ``alpha`` (asv's rule: test only when
    it can; p < 0.002 needs 7 samples a side)."""
    return min_p_two_sided(n, m) < alpha


def intervals_overlap(a: Sequence[float | None], b: Sequence[float | None]) -> bool:
    """Whether two [lo, hi] intervals overlap (an undefined one overlaps everything): asv's
    fallback when there are too few samples for the test."""
    if any(_num(x) is None for x in (*a, *b)):
        return True
    return float(a[1]) >= float(b[0]) and float(a[0]) <= float(b[1])


def _num(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None
