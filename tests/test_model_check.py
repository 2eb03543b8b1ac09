"""``python -m services.model.check`` (make bench MODEL=... runs it first): one line either way."""

from __future__ import annotations

import sys
import textwrap

import pytest

from services.model.check import main


@pytest.fixture()
def plug(tmp_path, monkeypatch):
    (tmp_path / "check_plug.py").write_text(textwrap.dedent("""
        INFO = {"name": "probe-me", "version": "1", "max_batch": 8, "batch_wait_ms": 0}
        class Good:
            info = INFO
            def predict_batch(self, xs):
                return [{"n": len(x)} for x in xs]
        class Short(Good):
            def predict_batch(self, xs):
                return xs[:1]
        class NotJson(Good):
            def predict_batch(self, xs):
                return [object() for _ in xs]
        def good(): return Good()
        def short(): return Short()
        def not_json(): return NotJson()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("RVS_COST_US", raising=False)
    yield monkeypatch
    sys.modules.pop("check_plug", None)


def run(capsys) -> tuple[int, str, str]:
    code = main()
    out, err = capsys.readouterr()
    return code, out, err


def test_a_good_model_is_one_line(plug, capsys):
    plug.setenv("RVS_MODEL", "check_plug:good")
    code, out, err = run(capsys)
    assert code == 0 and out.count("\n") == 1 and not err
    assert "'probe-me' 1" in out and 'answers like {"n":' in out


@pytest.mark.parametrize("factory,says", [("short", "returned 1 answer for 2 inputs"),
                                          ("not_json", "which is not JSON"),
                                          ("missing", "no callable 'missing'")])
def test_a_broken_model_is_one_error_line(plug, capsys, factory, says):
    plug.setenv("RVS_MODEL", f"check_plug:{factory}")
    code, out, err = run(capsys)
    assert code == 2 and not out and err.count("\n") == 1 and says in err


def test_a_cost_and_a_cost_axis_are_named_synthetic(plug, capsys):
    plug.setenv("RVS_MODEL", "check_plug:good")
    plug.setenv("RVS_COST_US", "50")
    code, out, _ = run(capsys)
    assert code == 0 and "+50 µs/input synthetic (measured" in out
    plug.setenv("RVS_COST_US", "0,250,1000")
    code, out, _ = run(capsys)
    assert code == 0 and "cost axis 0, 250, 1000 µs/input (synthetic)" in out
    plug.setenv("RVS_COST_US", "0,0")
    code, _, err = run(capsys)
    assert code == 2 and "twice" in err
