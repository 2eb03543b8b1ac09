"""The fuzz seed is printed on failure and replays the same examples (tests/conftest.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

HERE = Path(__file__).parent

PROBE = '''
import pytest
from hypothesis import given, seed, strategies as st
from fixtures.hostile import FUZZ_SEED, fuzz

pytestmark = pytest.mark.fuzz


@fuzz(5)
@seed(FUZZ_SEED)
@given(st.integers(0, 10**12))
def test_first_draws_then_fails(n):
    with open("draws.txt", "a") as f:
        f.write(f"{n}\\n")
    assert False, "planted failure"
'''


def _run(pytester: pytest.Pytester, monkeypatch, seed: int) -> tuple[str, list[str]]:
    draws = pytester.path / "draws.txt"
    draws.unlink(missing_ok=True)
    monkeypatch.setenv("RVS_FUZZ_SEED", str(seed))
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    res.assert_outcomes(failed=1)
    return res.stdout.str(), draws.read_text().split()


def test_failing_fuzz_test_prints_its_seed_and_the_seed_replays(pytester, monkeypatch):
    pytester.makeconftest((HERE / "conftest.py").read_text())
    shutil.copytree(HERE / "fixtures", pytester.path / "fixtures")
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\nmarkers = ["fuzz: f", "stack: s"]\n')
    pytester.makepyfile(test_probe=PROBE)

    out1, draws1 = _run(pytester, monkeypatch, 424242)
    assert "fuzz seed 424242: replay with RVS_FUZZ_SEED=424242 make test" in out1
    assert "test_probe.py::test_first_draws_then_fails" in out1
    out2, draws2 = _run(pytester, monkeypatch, 424242)
    assert draws2 == draws1                # same seed, same examples in the same order
    _out3, draws3 = _run(pytester, monkeypatch, 7)
    assert draws3 != draws1                # another seed, other examples
