"""Writes ``analysis/report.ipynb``: a thin notebook over the analysis functions (no logic of its own).

Regenerate after changing it: ``python -m analysis.notebook`` (needs nbformat, a dev dependency).
"""

from __future__ import annotations

from pathlib import Path

NOTEBOOK_PATH = Path(__file__).with_name("report.ipynb")

CELLS: list[tuple[str, str, list[str]]] = [
    ("markdown", """# rest-vs-stream: one run

Reads a run folder (`results/<run-id>/`) and shows the same tables and charts as `report.html`,
through the same functions (`analysis.summary`, `analysis.charts`). Set `RUN_DIR` below, or the
environment variable `RVS_RUN_DIR` (it wins), then run all cells.""", []),
    ("code", 'RUN_DIR = "results/latest"', ["parameters"]),
    ("code", """import os

from IPython.display import Image, Markdown, display

from analysis.charts import CHARTS, png_bytes
from analysis.rundir import load_run
from analysis.summary import (analyse, build_summary, error_table, headline_table, latency_table,
                              recovery_table, status_line)

RUN_DIR = os.environ.get("RVS_RUN_DIR", RUN_DIR)
run = load_run(RUN_DIR)
ra = analyse(run)
summary = build_summary(ra)
display(Markdown(f"**{run.caption}** · {status_line(summary)}"))
for note in run.notes:
    display(Markdown(f"- {note}"))""", []),
    ("markdown", "## Headline (each mode ÷ the first: above 1 is better for throughput and efficiency, below 1 for latency, errors, CV)", []),
    ("code", "headline_table(summary)", []),
    ("markdown", "## Latency percentiles, errors by kind, recovery after faults", []),
    ("code", "latency_table(summary)", []),
    ("code", "error_table(summary)", []),
    ("code", "recovery_table(summary)", []),
    ("markdown", "## Charts", []),
    ("code", """for name, build in CHARTS.items():
    fig = build(ra)
    if fig is not None:
        display(Image(png_bytes(fig)))""", []),
    ("markdown", """To compare this run with a baseline: `python -m analysis compare BASE HEAD`
(exit 1 only on a significant regression beyond threshold).""", []),
]


def build_notebook():
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, src, tags) in enumerate(CELLS):
        cell = new_code_cell(src) if kind == "code" else new_markdown_cell(src)
        cell["id"] = f"cell-{i:02d}"         # stable ids: regenerating gives the same file
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def write_notebook(path: Path = NOTEBOOK_PATH) -> Path:
    import nbformat

    nbformat.write(build_notebook(), str(path))
    return path


if __name__ == "__main__":
    print(write_notebook())
