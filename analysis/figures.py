"""Every headline figure, defined once: what it is called, its unit and format, which way is
better, and where it is shown (ratio, chart panel, console, repeats, compare).

The headline table, the summary chart, the console's closing table, the repeats block, the ratios
and ``compare`` all read this registry, so a figure cannot read one way in summary.md and another
in the console, and a figure added here shows up everywhere its flags say without other edits.
No imports from the rest of the package: every consumer may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

#: How ``compare`` uses a figure: "gate" decides the exit code, "info" is shown only.
Judged = Literal["gate", "info"]

#: How a mode ÷ baseline ratio is written, wherever it is shown.
RATIO_SPEC = "{:.2f}×"
#: How a missing figure is written.
MISSING = "–"


@dataclass(frozen=True, slots=True)
class Figure:
    """One figure of a mode's summary (M in docs/CONTRACTS.md)."""

    key: str                             # dotted path in M (and in metrics.headline)
    label: str                           # the headline table's row label, unit included
    unit: str                            # what it counts, for readers and tools
    spec: str                            # str.format spec of its value
    higher_is_better: bool | None = None  # None: neither (a count of what was sent)
    ratio: bool = False                  # in metrics.headline: mode ÷ baseline computed, shown
    threshold: float | None = None       # relative change compare counts (0.1 = 10 %)
    compare: Judged | None = None        # compare judges each mode's figure
    compare_ratio: Judged | None = None  # compare judges each mode ÷ baseline
    panel: bool = False                  # a bar chart of the summary figure
    column: str | None = None            # its header in the console's closing table
    repeated: bool = False               # summarised over repeats (or a run's windows)
    repeated_ratio: bool = False         # its ratio is too (the representative repeat's pick)

    def __post_init__(self) -> None:
        if (self.compare or self.compare_ratio) and (self.threshold is None
                                                     or self.higher_is_better is None):
            raise ValueError(f"{self.key}: a compared figure needs a threshold and a direction")
        if (self.compare_ratio or self.repeated or self.repeated_ratio or self.panel) \
                and not self.ratio:
            raise ValueError(f"{self.key}: its ratio, repeats or panel need it in metrics.headline")

    def format(self, value: Any, missing: str = MISSING) -> str:
        return fmt(value, self.spec, missing)


FIGURES: tuple[Figure, ...] = (
    Figure("successful_throughput", "successful throughput (req/s)", "req/s", "{:,.1f}", True,
           ratio=True, threshold=0.10, compare="info", compare_ratio="gate", panel=True,
           column="ok req/s"),
    Figure("reviews_per_s", "reviews/s", "reviews/s", "{:,.1f}", True, ratio=True,
           threshold=0.10, compare="info", compare_ratio="gate", panel=True, column="reviews/s",
           repeated=True, repeated_ratio=True),
    Figure("reviews_answered_per_s", "reviews/s answered in the window", "reviews/s", "{:,.1f}",
           True),
    Figure("sent", "requests sent", "requests", "{:,d}", column="sent"),
    Figure("ok", "ok", "requests", "{:,d}", True, column="ok"),
    Figure("failed", "failed", "requests", "{:,d}", False),
    Figure("error_rate", "error rate", "failed / sent", "{:.2%}", False, ratio=True,
           threshold=0.10, compare="info", panel=True, column="errors", repeated=True),
    Figure("attempts", "attempts", "attempts", "{:,d}"),
    Figure("retry_amplification", "retry amplification", "attempts / request", "{:.3f}", False,
           ratio=True),
    Figure("latency_ms.p50", "latency p50 (ms)", "ms", "{:,.1f}", False, ratio=True,
           column="p50 ms", repeated=True),
    Figure("latency_ms.p90", "latency p90 (ms)", "ms", "{:,.1f}", False),
    Figure("latency_ms.p99", "latency p99 (ms)", "ms", "{:,.1f}", False, ratio=True,
           threshold=0.25, compare="info", compare_ratio="info", panel=True, column="p99 ms",
           repeated=True),
    Figure("latency_ms.max", "latency max (ms)", "ms", "{:,.1f}", False),
    Figure("service_latency_ms.p99", "service p99 (ms)", "ms", "{:,.1f}", False),
    Figure("throughput_cv", "throughput CV (1 s)", "std / mean", "{:.3f}", False, ratio=True,
           threshold=0.25, compare="info", panel=True, column="spread (CV)"),
    Figure("throughput_spread_1s.range", "throughput range (1 s, req/s)", "req/s", "{:,.1f}",
           False),
    Figure("in_flight.max", "max in flight", "attempts", "{:,d}"),
    Figure("efficiency", "efficiency (vs ceiling)", "reviews/s ÷ ceiling", "{:.1%}", True,
           ratio=True, threshold=0.10, compare="gate", panel=True, column="efficiency"),
    Figure("ceiling_reviews_per_s", "model ceiling (reviews/s, best try)", "reviews/s",
           "{:,.0f}"),
    Figure("ceiling.noise", "ceiling noise (max-min)/best", "(max - min) / best", "{:.1%}",
           False),
    Figure("core_noise.steal", "steal on service cores (%)", "% of a core", "{:,.1f}", False),
    Figure("core_noise.other", "others' CPU on service cores (%)", "% of a core", "{:,.1f}",
           False),
    Figure("service_cpu_mean", "service CPU mean (%)", "% of a core", "{:,.0f}"),
    Figure("duplicates", "duplicates", "answers", "{:,d}", False),
)


def by_key(key: str) -> Figure | None:
    """The figure at ``key`` (a dotted path in M), or None."""
    return next((f for f in FIGURES if f.key == key), None)


def ratio_keys() -> list[str]:
    """metrics.headline's names, in order: the figures with a mode ÷ baseline ratio."""
    return [f.key for f in FIGURES if f.ratio]


def repeated_ratio() -> Figure:
    """The one figure whose ratio the repeats summarise (and pick the representative by):
    reviews/s, since a REST request may carry 1,000 reviews and a stream event one, so a ratio of
    requests/s compares different units."""
    found = [f for f in FIGURES if f.repeated_ratio]
    if len(found) != 1:
        raise ValueError(f"exactly one figure may be repeated_ratio, not {len(found)}")
    return found[0]


def fmt(value: Any, spec: str = "{}", missing: str = MISSING) -> str:
    """``value`` in ``spec``; ``missing`` for None, ``str(value)`` when it does not fit."""
    if value is None:
        return missing
    try:
        if "d}" in spec:
            value = int(value)
        return spec.format(value)
    except (ValueError, TypeError):
        return str(value)
