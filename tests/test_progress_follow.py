"""The bench never waits for ever on a driver: past its limit it is asked to stop (SIGTERM), and
one that cannot act on that is killed after a grace period."""

from __future__ import annotations

import sys
import time

from bench import progress as pg
from services.procs import Supervisor

IGNORES_SIGTERM = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                   "print('{\"event\": \"start\"}', flush=True); time.sleep(120)")


def test_a_driver_that_ignores_sigterm_is_killed_after_the_grace(tmp_path, monkeypatch):
    monkeypatch.setattr(pg, "KILL_GRACE_S", 0.5)
    with Supervisor(tmp_path / "logs") as sup:
        proc = sup.start("driver-stuck", [sys.executable, "-c", IGNORES_SIGTERM])
        t0 = time.monotonic()
        final = pg.Progress(quiet=True).follow_driver("stuck", proc, total_s=1.0, limit_s=1.0)
        waited = time.monotonic() - t0
        assert final is None and not proc.alive()
        assert waited < 20, waited              # not the driver's 120 s
        assert proc.popen.returncode == -9      # killed, not stopped
