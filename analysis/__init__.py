"""analysis: from a run folder's request tables to numbers, charts, a report and a CI verdict.

metrics (pure numbers) · repeats (median, range, interval over repeats) · rundir (reads a run
folder) · summary (summary.json/.md, tables) · charts (PNG) · report (report.html) · compare
(BASE vs HEAD, exit code) · notebook (report.ipynb).
CLI: ``python -m analysis {report,summary,compare} ...``.
"""
