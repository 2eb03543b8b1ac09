"""The REST workload as a plain locustfile, for Locust's own CLI and distributed mode.

The bench uses ``python -m loadgen drive rest`` (one process, pinned, same code). This file is for
running the same workload with Locust's CLI, e.g. spread over several processes or machines::

    # one process
    RVS_SCENARIO=steady RVS_OUT=/tmp/rest RVS_RUN_ID=r1 \\
        locust -f loadgen/locustfile.py --headless -H http://127.0.0.1:8080 -u 1 -r 1 -t 90s

    # distributed: a master and W workers (any hosts that reach the target)
    locust -f loadgen/locustfile.py --master --headless --expect-workers 2 -u 2 -r 2 -t 90s \\
        -H http://TARGET:8080
    RVS_SCENARIO=steady RVS_OUT=/tmp/rest RVS_RUN_ID=r1 RVS_WORKERS=2 \\
        locust -f loadgen/locustfile.py --worker --master-host MASTER     # on each worker

Environment: ``RVS_SCENARIO`` (name or path), ``RVS_OUT`` (folder), ``RVS_RUN_ID``,
``RVS_WORKERS`` (worker processes, default 1), ``RVS_PATH`` (default /predict), ``RVS_VALIDATE``
(``0`` accepts any 2xx body, for no-op targets).

Semantics and limits (read before trusting a distributed run):

* Open loop: ``-u`` must equal the number of worker processes: each process runs one scheduler
  user that takes every W-th request of the one global plan (worker index k takes i = k mod W),
  so the union is exactly the planned arrival process; ids stay globally unique.
* Closed loop: ``-u`` = total clients, split by Locust; the scenario's client *steps* are not
  followed (use Locust's ``-u`` or a LoadTestShape), only ``think_s``; request ids carry the worker
  index (``<run_id>-w<k>-<n>``).
* Each process writes its own ``RVS_OUT/worker-<k>/requests.parquet`` and ``driver.json`` with
  its own ``t0_epoch`` (set when its test starts); times in rows are relative to that t0. Merging
  workers means shifting each table by its ``t0_epoch``; across machines this is only as good as
  their clock sync (NTP: ~1 ms on a LAN), which bounds the precision of the merged latencies'
  time axis (not of the latencies themselves, which are measured on one clock each).
* Locust's master aggregates its own stats; our rows are per process and are the truth. The
  ``max_in_flight`` cap and lateness bound apply per process.
* ``-t`` must cover warm-up + duration + drain; in a single local process the run also stops
  by itself when the schedule and its drain are over.
"""

from __future__ import annotations

import os
from pathlib import Path

from loadgen import rest_driver  # noqa: I001  (imports locust first: gevent monkey-patching)

import gevent
from locust import User, constant, events, task
from locust.exception import StopUser
from locust.runners import LocalRunner, MasterRunner

from loadgen import ledger as L
from loadgen import record
from loadgen.payloads import Payloads, load_texts
from loadgen.scenario import load_scenario

SCENARIO = load_scenario(os.environ.get("RVS_SCENARIO", "smoke"))
OUT = Path(os.environ.get("RVS_OUT", "results/locust"))
RUN_ID = os.environ.get("RVS_RUN_ID", "locust")
WORKERS = int(os.environ.get("RVS_WORKERS", "1"))
PATH = os.environ.get("RVS_PATH", "/predict")
VALIDATE = os.environ.get("RVS_VALIDATE", "1") != "0"   # 0: accept any 2xx (no-op targets)

_state: dict = {}


def _run() -> rest_driver.RestRun:
    run = _state.get("run")
    if run is None:
        raise StopUser()
    return run


@events.test_start.add_listener
def _on_start(environment, **_kw):
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        return
    k = int(getattr(runner, "worker_index", 0) or 0)
    open_loop = SCENARIO.is_open
    run_id = RUN_ID if (open_loop or WORKERS == 1) else f"{RUN_ID}-w{k}"
    payloads = Payloads(load_texts(SCENARIO.payload), SCENARIO.workload.batch_size, run_id)
    run = rest_driver.RestRun(SCENARIO, environment.host, run_id, payloads, path=PATH,
                              part=(k, WORKERS) if open_loop else (0, 1),
                              validate_answers=VALIDATE)
    run.env = environment
    run.start_clock()
    _state.update(run=run, worker=k, cpu=L.CpuMeter(), written=False)
    if isinstance(runner, LocalRunner):
        def _auto_stop():
            gevent.sleep(SCENARIO.timing.horizon_s)
            while run.rel() < run.end_s and (
                    run.ledger.in_flight > 0 or (run.plan is not None
                                                 and not run.dispatch_done.is_set())):
                gevent.sleep(0.1)
            runner.quit()
        gevent.spawn(_auto_stop)


@events.test_stop.add_listener
def _on_stop(environment, **_kw):
    run = _state.get("run")
    if run is None or _state.get("written"):
        return
    _state["written"] = True
    run.interrupt()
    run.requests_group.kill(block=True, timeout=5)
    stop_s = run.rel()
    run.ledger.finalize(stop_s)
    run.close_sessions()
    df = record.to_frame(run.ledger.rows)
    counts = L.check_accounting(df, set(run.planned_ids))
    out = OUT / f"worker-{_state['worker']}" if WORKERS > 1 else OUT
    L.write_outputs(out, df, {
        "mode": "rest", "run_id": run.run_id, "scenario": SCENARIO.name,
        "driver": "locustfile", "worker_index": _state["worker"], "workers": WORKERS,
        "t0_epoch": run.clock.t0_epoch, "end_epoch": run.clock.epoch(stop_s), "stop_s": stop_s,
        "settings": run.settings(), "counts": counts, "lateness_s": L.dist(run.lateness),
        "dispatch_lag_s": L.dist(run.dispatch_lag), "generator_saturated": run.saturated,
        "cap_waits": run.cap_waits, "cpu": _state["cpu"].summary(),
        "locust_local_stats": {"requests": environment.stats.total.num_requests,
                               "failures": environment.stats.total.num_failures},
        "payload": run.payloads.describe(), "workers_answered": run.workers_answered(),
    })


class RvsOpenLoopUser(User):
    """One per process: runs this process's share of the planned schedule."""
    abstract = not SCENARIO.is_open
    wait_time = constant(0)

    @task
    def schedule(self) -> None:
        _run().dispatch_open()
        raise StopUser()


class RvsClosedLoopUser(User):
    """One client: an operation (with retries) then think_s."""
    abstract = SCENARIO.is_open
    wait_time = constant(0 if SCENARIO.is_open else SCENARIO.arrival.think_s)

    @task
    def operation(self) -> None:
        _run().closed_op(self)
