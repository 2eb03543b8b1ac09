"""A run that is stopped (SIGTERM, as a CI timeout or ``kill`` sends it) keeps what it measured
and leaves no process behind: ``python -m bench run``, ``python -m bench ceiling`` and pytest.

Each test starts the real command as a subprocess, waits until its load generator is driving,
takes the PIDs of every process below it (psutil, by parentage: the Supervisor's children and
what they forked), sends SIGTERM to the command alone, and checks that every one of those PIDs is
gone and that the run folder says incomplete.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def _wait_for(check, timeout_s: float, what: str, proc: subprocess.Popen):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the command exited ({proc.returncode}) before {what}")
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"not {what} after {timeout_s:.0f}s")


def _driving(root: Path):
    """A driver log under ``root`` with the driver's start line: the drive is under way."""
    for log in root.rglob("driver-*.log"):
        if '"event":"start"' in log.read_text(errors="replace").replace(" ", ""):
            return log
    return None


def _descendants(pid: int) -> list[int]:
    return [c.pid for c in psutil.Process(pid).children(recursive=True)]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _sigterm_and_check(proc: subprocess.Popen, pids: list[int]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the command did not exit within 90 s of SIGTERM") from None
    left = [p for p in pids if _alive(p)]
    for p in left:                      # do not leave them to the next test either
        with _suppress():
            os.killpg(p, signal.SIGKILL)
    assert not left, f"processes left after SIGTERM: {left}"
    return rc


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], (ProcessLookupError, PermissionError))


def _start(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


@pytest.mark.stack
def test_sigterm_to_bench_run_keeps_the_tables_and_leaves_nothing(tmp_path):
    from loadgen import record
    from loadgen.scenario import load_scenario

    sc = load_scenario("smoke").to_dict()
    sc.update(name="sigterm", modes=["stream"])
    sc["timing"] = {"warmup_s": 2, "duration_s": 120, "drain_s": 2}
    path = tmp_path / "sigterm.yaml"
    path.write_text(yaml.safe_dump(sc, sort_keys=False))
    root = tmp_path / "results"
    proc = _start([PY, "-m", "bench", "run", str(path), "--results", str(root), "--no-ceiling",
                   "--no-report"], tmp_path / "bench.log")
    try:
        _wait_for(lambda: _driving(root), 180, "driving", proc)
        time.sleep(2)                                 # a few seconds of requests recorded
        pids = _descendants(proc.pid)
        assert len(pids) >= 3, pids                   # broker, Faust worker, driver at least
        rc = _sigterm_and_check(proc, pids)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 130, (tmp_path / "bench.log").read_text()[-2000:]
    run_dir = next(d for d in root.iterdir() if d.is_dir() and d.name.endswith("-sigterm"))
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["complete"] is False and meta["error"].startswith("interrupted")
    assert meta["failed_phase"] == "stream"
    df = record.read(run_dir / "stream" / "requests.parquet")     # valid, and accounted for
    driver = json.loads((run_dir / "stream" / "driver.json").read_text())
    assert driver["complete"] is False and driver["interrupted"] is True
    assert len(df) > 0 and driver["counts"]["requests"] == driver["counts"]["ok"] + \
        driver["counts"]["failed"]


@pytest.mark.stack
def test_sigterm_to_bench_ceiling_leaves_nothing(tmp_path):
    root = tmp_path / "results"
    proc = _start([PY, "-m", "bench", "ceiling", "--", "--variants", "stream/event",
                   "--saturated", "1,120,1", "--half", "1,1,1", "--results", str(root),
                   "--no-chart", "--quiet"], tmp_path / "ceiling.log")
    try:
        _wait_for(lambda: _driving(root), 240, "driving", proc)
        pids = _descendants(proc.pid)
        assert len(pids) >= 3, pids
        rc = _sigterm_and_check(proc, pids)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 130, (tmp_path / "ceiling.log").read_text()[-2000:]
    run_dir = next(d for d in root.iterdir() if d.is_dir() and "ceiling" in d.name)
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["complete"] is False and "interrupted" in meta.get("error", "")


TEST_BODY = '''
import time
from services.procs import Supervisor

def test_sleeps(tmp_path):
    with Supervisor(tmp_path / "logs") as sup:
        p = sup.start("child", ["python3", "-c", "import time; time.sleep(120)"])
        (tmp_path.parent / "child.pid").write_text(str(p.pid))
        time.sleep(120)
'''


def test_sigterm_to_pytest_stops_what_the_test_started(tmp_path):
    """The suite's conftest turns SIGTERM into KeyboardInterrupt, so a Supervisor in a test
    stops its child (with SIGTERM's default, pytest dies and the child is orphaned)."""
    (tmp_path / "test_body.py").write_text(TEST_BODY)
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{REPO}"}
    pid_file = tmp_path / "base" / "child.pid"
    with open(tmp_path / "pytest.log", "wb") as out:
        proc = subprocess.Popen([PY, "-m", "pytest", "-q", "-p", "conftest", "-p",
                                 "no:cacheprovider", "--basetemp", str(tmp_path / "base"),
                                 str(tmp_path / "test_body.py")], cwd=tmp_path, env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_for(lambda: pid_file.is_file() and pid_file.read_text(), 60, "started", proc)
        child = int(pid_file.read_text())
        assert _alive(child)
        _sigterm_and_check(proc, [child])
    finally:
        if proc.poll() is None:
            proc.kill()
