"""Console output of a run: a progress bar per phase with live OK/s and errors, a closing table.

The driver runs as a pinned child process and prints one JSON line per second to its log; we tail
that log, so the bench's own process does no work on the driver's core.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn
from rich.table import Table


#: Seconds a driver gets to write its table after SIGTERM before it is killed.
KILL_GRACE_S = 30.0

class Progress:
    def __init__(self, quiet: bool = False):
        tty = sys.stdout.isatty()
        # A pipe or a CI log gets 120 columns (rich would assume 80 and wrap every path).
        self.console = Console(stderr=False, highlight=False, quiet=quiet,
                               force_terminal=None if tty else False, width=None if tty else 120)

    def say(self, msg: str) -> None:
        self.console.print(msg, soft_wrap=True)  # a message is one line: paths stay greppable

    def follow_driver(self, mode: str, proc, *, total_s: float, limit_s: float) -> dict | None:
        """Tail the driver's JSON lines until it exits; stop it (SIGTERM) past ``limit_s``, and
        kill it (SIGKILL) if it is still there :data:`KILL_GRACE_S` later: a driver stuck where
        its SIGTERM handler cannot run must not hold the bench (and a test) for ever.

        Returns the driver's final line (``{"event": "final", ...}``) or None.
        """
        final = None
        pos = 0
        last: dict = {}
        prev_ok, prev_t = 0, 0.0
        t_begin = time.monotonic()
        terminated: float | None = None
        columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[stats]}"))
        with RichProgress(*columns, console=self.console, transient=False,
                          disable=self.console.quiet) as bar:
            task = bar.add_task(f"{mode}", total=total_s, stats="")
            while True:
                alive = proc.alive()
                pos, lines = _read_new_lines(proc.log_path, pos)
                for line in lines:
                    rec = _parse(line)
                    if rec is None:
                        continue
                    if rec.get("event") == "final":
                        final = rec
                        continue
                    if "event" in rec:  # the start line: nothing to show yet
                        continue
                    last = rec
                    t = float(rec.get("t", 0.0))
                    ok = int(rec.get("ok", 0))
                    rate = (ok - prev_ok) / (t - prev_t) if t > prev_t else 0.0
                    prev_ok, prev_t = ok, t
                    bar.update(task, completed=min(t, total_s),
                               description=f"{mode} [{rec.get('phase', '')}]",
                               stats=f"ok/s {rate:7.1f}  ok {ok}  failed {rec.get('failed', 0)}"
                                     f"  in flight {rec.get('in_flight', 0)}")
                if not alive:
                    break
                now = time.monotonic()
                if terminated is None and now - t_begin > limit_s:
                    self.say(f"[yellow]{mode}: driver over its time limit; stopping it[/]")
                    os.killpg(proc.pid, signal.SIGTERM)
                    terminated = now
                elif terminated is not None and now - terminated > KILL_GRACE_S:
                    self.say(f"[red]{mode}: driver ignored SIGTERM for {KILL_GRACE_S:.0f} s; "
                             f"killing it (its table is lost; log: {proc.log_path})[/]")
                    os.killpg(proc.pid, signal.SIGKILL)
                    terminated = float("inf")
                time.sleep(0.25)
            if final is not None:
                bar.update(task, completed=total_s)
        if final is None and last:
            self.say(f"[yellow]{mode}: last progress {last}[/]")
        if proc.popen.returncode not in (0, None):
            self.say(f"[yellow]{mode}: driver exited with {proc.popen.returncode}; "
                     f"log: {proc.log_path}[/]")
        return final

    def show_summary(self, run_dir: Path, outputs) -> None:
        path = run_dir / "summary.json"
        if not path.exists():
            return
        s = json.loads(path.read_text())
        from rich.markup import escape

        from analysis.verdict import run_verdict
        verdict = run_verdict(s)   # every run opens with its verdict in words
        if verdict:
            self.console.print(f"[bold]{escape(verdict)}[/]", soft_wrap=True)
        rep = s.get("representative_repeat")
        t = Table(title=f"{s.get('scenario')} — {'complete' if s.get('complete') else 'INCOMPLETE'}"
                        + (f" — {rep}, the most typical repeat" if rep else ""))
        from analysis import figures as figs
        from analysis.summary import dig

        shown = [f for f in figs.FIGURES if f.column]
        for col in ("mode", *(f.column or "" for f in shown)):
            t.add_column(col, justify="right")
        for mode, m in (s.get("modes") or {}).items():
            # a mode that never ran (an earlier phase failed) is a row of dashes
            t.add_row(mode, *(f.format(dig(m, f.key) if m else None, "—") for f in shown))
        self.console.print(t)
        faults = [(mode, f) for mode, m in (s.get("modes") or {}).items()
                  for f in ((m or {}).get("faults") or [])]
        if faults:
            ft = Table(title="faults")
            for col in ("mode", "kind", "at s", "over at s", "recovery s", "requests", "lost",
                        "retried", "duplicated"):
                ft.add_column(col, justify="right")
            for mode, f in faults:
                ft.add_row(mode, str(f.get("kind")), _f(f.get("t_s"), 1), _f(f.get("ended_t_s"), 1),
                           _f(f.get("recovery_s"), 1) if f.get("recovery_s") is not None
                           else "never", _f(f.get("requests"), 0), _f(f.get("lost"), 0),
                           _f(f.get("retried"), 0), _f(f.get("duplicated"), 0))
            self.console.print(ft)
        self._show_repeats(s)
        from analysis.summary import caveats, yardstick_lines
        for line in yardstick_lines(s):
            self.console.print(escape(line), soft_wrap=True)
        for line in caveats(s):
            self.console.print(f"[yellow]caveat[/]: {escape(line)}", soft_wrap=True)
        from analysis.summary import baseline_name, summary_ratios
        for name, ratios in summary_ratios(s).items():
            self.console.print(f"{name} ÷ {baseline_name(s)}: " + ", ".join(
                f"{k} {figs.fmt(v, figs.RATIO_SPEC, '—')}" for k, v in ratios.items()))
        self.console.print(f"report: {run_dir / 'report.html'}")


    def _show_repeats(self, s: dict) -> None:
        """Each figure's median, range and 95 % interval, over repeats or the run's windows."""
        from analysis.summary import repeats_caption, repeats_table

        rows = repeats_table(s)
        if not len(rows):
            return
        b = s.get("repeats") or {}
        what = f"{b.get('n')} repeats" if b.get("source") == "repeats" \
            else f"{b.get('windows')} windows of one run"
        t = Table(title=f"median over {what}", caption=repeats_caption(s))
        t.add_column("figure")
        for col in rows.columns:
            t.add_column(str(col), justify="right")
        for label, row in rows.iterrows():
            t.add_row(str(label), *(str(row[c]) for c in rows.columns))
        self.console.print(t)


def _f(v, nd: int) -> str:
    if v is None:
        return "—"
    try:
        return f"{float(v):,.{nd}f}"
    except (TypeError, ValueError):
        return str(v)


def _read_new_lines(path: Path, pos: int) -> tuple[int, list[str]]:
    try:
        with open(path, "rb") as f:
            f.seek(pos)
            data = f.read()
    except OSError:
        return pos, []
    if not data:
        return pos, []
    end = data.rfind(b"\n")
    if end < 0:
        return pos, []
    chunk = data[: end + 1]
    return pos + len(chunk), chunk.decode(errors="replace").splitlines()


def _parse(line: str) -> dict | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) else None
