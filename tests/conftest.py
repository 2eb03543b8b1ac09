"""Suite-wide hooks: the fuzz seed in the header and on every failing fuzz test, and the fuzz
tests' total time against their budget (printed, not enforced: speed is for benchmarks)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.hostile import FUZZ_SEED  # noqa: E402

pytest_plugins = ["pytester"]

#: The fuzz tests together should stay within this (issue 7: at most 2 minutes).
FUZZ_BUDGET_S = 120.0

_fuzz_s: dict[str, float] = {}


def replay_hint(nodeid: str) -> str:
    return f"fuzz seed {FUZZ_SEED}: replay with RVS_FUZZ_SEED={FUZZ_SEED} make test " \
           f"PYTEST_ARGS='{nodeid}'"


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a CI timeout, ``kill``) ends the session like Ctrl-C: the exception unwinds the
    running test, so its Supervisor context managers and the fixtures' finalizers stop every
    process they started, by PID. Left at its default, SIGTERM ends pytest at once and orphans
    them (nginx, uWSGI, the broker) to PID 1."""
    if threading.current_thread() is threading.main_thread():
        from services.procs import sigterm_unwinds
        sigterm_unwinds()


def pytest_report_header(config: pytest.Config) -> str:
    return f"fuzz seed: {FUZZ_SEED} (set RVS_FUZZ_SEED to replay a run)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    rep = outcome.get_result()
    if item.get_closest_marker("fuzz") is None:
        return
    _fuzz_s[item.nodeid] = _fuzz_s.get(item.nodeid, 0.0) + rep.duration
    if rep.failed:
        rep.sections.append(("fuzz seed", replay_hint(item.nodeid)))


def pytest_terminal_summary(terminalreporter) -> None:
    if _fuzz_s:
        total = sum(_fuzz_s.values())
        terminalreporter.write_line(
            f"fuzz: {len(_fuzz_s)} tests in {total:.1f} s (budget {FUZZ_BUDGET_S:.0f} s), "
            f"seed {FUZZ_SEED}")


@pytest.fixture(scope="session")
def stream_stack(tmp_path_factory):
    """One embedded broker (last core) + one Faust worker (first core) serving the real model, shared by
    the stream stack tests; stopped by PID at the end, and checked for leftovers."""
    import os

    from services import procs
    from services.broker import start_broker
    from services.stream import launch
    from services.stream.client import StreamClient
    from services.stream.settings import StreamSettings, broker_defaults

    run = tmp_path_factory.mktemp("stream-stack")
    cpus = sorted(os.sched_getaffinity(0))
    svc, brk = ([cpus[0]], [cpus[-1]]) if len(cpus) > 1 else (None, None)
    sup = procs.Supervisor(run / "logs")
    try:
        broker = start_broker(sup, run, cpus=brk)
        s = StreamSettings(shape="batch", workers=1, max_text_chars=20_000,
                           **broker_defaults(broker.name))
        ep = launch.start(sup, s, run, bootstrap=broker.bootstrap, cpus=svc, timeout_s=60)
        client = StreamClient(broker.bootstrap)
        yield {"sup": sup, "broker": broker, "ep": ep, "client": client, "run": run,
               "settings": s}
        client.close()
    finally:
        pids = [p.pid for p in sup.procs]
        sup.stop_all()
    assert pids and not any(procs.group_alive(p) for p in pids), "a stack process outlived the test"
