"""analysis: from a run folder's request tables to numbers, charts, a report and a CI verdict.

figures (every headline figure's name, unit, format, direction, compare threshold) ·
metrics (pure numbers) · repeats (median, range, interval over repeats) · rundir (reads a run
folder) · summary (summary.json/.md, tables) · charts (PNG) · report (report.html) · compare
(BASE vs HEAD, exit code) · notebook (report.ipynb).
CLI: ``python -m analysis {report,summary,compare} ...``.
"""
