"""The notebook runs headless against a fixture run and shows the analysis' tables and charts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.fake_run import make_run  # noqa: E402

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from analysis.notebook import NOTEBOOK_PATH, build_notebook  # noqa: E402


def test_committed_notebook_matches_its_generator():
    committed = nbformat.read(str(NOTEBOOK_PATH), as_version=4)
    assert [c.source for c in committed.cells] == [c.source for c in build_notebook().cells]


def test_notebook_executes_against_a_fixture_run(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run", duration_s=40)
    monkeypatch.setenv("RVS_RUN_DIR", str(run))
    nb = nbformat.read(str(NOTEBOOK_PATH), as_version=4)
    # kernel "python3": jupyter_client runs it with this interpreter (the venv's)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "successful throughput (req/s)" in html
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 6
    assert any("fixture" in o.get("data", {}).get("text/markdown", "") for o in outputs)
