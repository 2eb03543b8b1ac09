"""How many serving workers answered a mode, and how evenly: pure functions, no I/O.

Every answer names the worker process that served it (``<hostname>/<pid>``, docs/CONTRACTS.md)
and the driver counts answers per worker into driver.json ``workers_answered``, which the bench
copies into meta.json ``modes.<mode>.driver``. That count is the only way to see that a
``docker compose up --scale stream=3`` took effect: an attached run has no configured worker
count (``modes.<mode>.workers`` is null) and the embedded broker can't list a group's members.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loadgen.workers import UNKNOWN  # the driver's key for answers that named no worker


@dataclass(frozen=True, slots=True)
class Workers:
    """Configured vs answering workers of one mode."""

    configured: int | None        # meta.modes.<mode>.workers (None: attached, not started by us)
    answered: int | None          # distinct workers that answered (None: driver did not count)
    answers: int                  # answers counted, named or not
    unnamed: int                  # answers that named no worker
    min_share: float | None       # smallest / largest share of the named answers one worker had
    max_share: float | None
    by_worker: dict[str, int]


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def workers_from_meta(mode_meta: Mapping[str, Any]) -> Workers:
    """meta.json's mode entry -> :class:`Workers` (``answered`` None for runs recorded before
    the drivers counted workers)."""
    configured = _int(mode_meta.get("workers"))
    counts = (mode_meta.get("driver") or {}).get("workers_answered")
    if not isinstance(counts, Mapping):
        return Workers(configured, None, 0, 0, None, None, {})
    by = {str(k): int(v) for k, v in sorted(counts.items())}
    named = {k: v for k, v in by.items() if k != UNKNOWN and v > 0}
    total = sum(named.values())
    shares = [v / total for v in named.values()] if total else []
    return Workers(configured, len(named), sum(by.values()), by.get(UNKNOWN, 0),
                   min(shares, default=None), max(shares, default=None), by)


def workers_line(mode: str, w: Mapping[str, Any] | None) -> str:
    """One line for summary.md and the report, from the summary's ``workers`` dict: how many
    workers answered, next to how many were configured, and the spread of answers over them."""
    w = w or {}
    configured, answered = w.get("configured"), w.get("answered")
    if configured is None:
        conf = "configured: unknown, the bench attached to a running deployment"
    elif answered is not None and answered < configured:
        conf = f"configured: {configured}; fewer answered than were configured"
    elif answered is not None and answered > configured:
        conf = f"configured: {configured}; a restarted worker answers under a new pid"
    else:
        conf = f"configured: {configured}"
    if answered is None:
        return f"{mode}: workers that answered: not recorded by this run's driver ({conf})"
    line = f"{mode}: workers that answered: {answered} ({conf})"
    if w.get("min_share") is not None:
        line += (f"; share of answers per worker: min {w['min_share']:.1%}, "
                 f"max {w['max_share']:.1%}")
    if w.get("unnamed"):
        line += f"; {w['unnamed']:,} answers named no worker"
    return line
