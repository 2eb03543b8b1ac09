"""Does the embedded broker's cost per message grow with its log?  ``python -m services.broker_drift``

One producer sends timestamped messages at a constant rate to a fresh topic on a fresh Tansu and
one consumer reads them back (both librdkafka, small fetch wait as the harness uses); every 10 s
it prints the end-to-end p50/p99 and the broker's CPU. No Faust, no model: only the broker.

Why it exists: Tansu 0.6's memory storage lists every stored batch of a partition on each fetch
that returns data (``dynostore.rs`` ``fetch``), so at a steady load its CPU climbs with the run's
length, and more partitions spread the listing. The stream deployment's ``answer_partitions``
default and the report's "Caveats" rest on what this prints. Bounded: it stops after
``--seconds`` and stops the broker by PID.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import psutil
from confluent_kafka import Consumer, Producer, TopicPartition

from services import procs
from services.broker import broker_kind, create_topics, start_broker


def measure(rate: float, seconds: float, partitions: int, fetch_wait_ms: int,
            log_dir: str) -> list[dict]:
    before = os.sched_getaffinity(0)
    cpus = sorted(before)
    try:
        return _measure(rate, seconds, partitions, fetch_wait_ms, log_dir, cpus)
    finally:
        os.sched_setaffinity(0, before)   # pinned only while measuring (callable in-process)


def _measure(rate: float, seconds: float, partitions: int, fetch_wait_ms: int, log_dir: str,
             cpus: list[int]) -> list[dict]:
    with procs.Supervisor(log_dir) as sup:
        broker = start_broker(sup, cpus=[cpus[-1]] if len(cpus) > 1 else None)
        if len(cpus) > 1:
            os.sched_setaffinity(0, {cpus[0]})
        create_topics(broker.bootstrap, {"drift": partitions})
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0,
                             "log_level": 3})
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "drift",
                             "enable.auto.commit": False, "fetch.wait.max.ms": fetch_wait_ms,
                             "fetch.min.bytes": 1, "log_level": 3})
        consumer.assign([TopicPartition("drift", p, 0) for p in range(partitions)])
        got: list[tuple[float, float]] = []
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                m = consumer.poll(0.05)
                if m is not None and not m.error():
                    now = time.time()
                    got.append((now, now - float(m.value())))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        bproc = psutil.Process(broker.pid)
        bproc.cpu_percent()
        cpu: list[float] = []
        t0 = time.time()
        due, sent, next_cpu = t0, 0, t0 + 10
        while (now := time.time()) < t0 + seconds:
            if now >= due:
                producer.produce("drift", key=str(sent).encode(), value=repr(now).encode())
                producer.poll(0)
                sent += 1
                due += 1 / rate
            if now >= next_cpu:
                cpu.append(bproc.cpu_percent())
                next_cpu += 10
            time.sleep(max(0.0, min(due - time.time(), 0.002)))
        producer.flush(10)
        time.sleep(1)
        stop.set()
        reader.join(5)
        consumer.close()
    rows = []
    for k in range(int(seconds // 10)):
        lat = sorted(x for t, x in got if t0 + 10 * k <= t < t0 + 10 * (k + 1))
        rows.append({"from_s": 10 * k, "to_s": 10 * (k + 1), "received": len(lat),
                     "p50_ms": 1e3 * lat[len(lat) // 2] if lat else None,
                     "p99_ms": 1e3 * lat[int(len(lat) * 0.99)] if lat else None,
                     "broker_cpu_percent": cpu[k] if k < len(cpu) else None})
    print(f"sent {sent}, received {len(got)}")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m services.broker_drift", description=__doc__.split(
        "\n")[0])
    ap.add_argument("--rate", type=float, default=100.0, help="messages per second (100)")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long (60)")
    ap.add_argument("--partitions", type=int, default=1, help="partitions of the topic (1)")
    ap.add_argument("--fetch-wait-ms", type=int, default=5, help="consumer fetch.wait.max.ms (5)")
    ap.add_argument("--log-dir", default="var/broker-drift", help="broker log folder")
    a = ap.parse_args(argv)
    if not (0 < a.rate <= 5000 and 10 <= a.seconds <= 600 and 1 <= a.partitions <= 64):
        ap.error("need 0 < --rate <= 5000, 10 <= --seconds <= 600, 1 <= --partitions <= 64")
    procs.sigterm_unwinds()
    print(f"{broker_kind()}, {a.rate:g} msg/s for {a.seconds:g} s, {a.partitions} partition(s), "
          f"fetch.wait.max.ms {a.fetch_wait_ms}")
    rows = measure(a.rate, a.seconds, a.partitions, a.fetch_wait_ms, a.log_dir)
    print(f"{'window':>10} {'received':>9} {'p50 ms':>8} {'p99 ms':>8} {'broker CPU %':>13}")
    for r in rows:
        f = (lambda v, d=1: "-" if v is None else f"{v:.{d}f}")  # noqa: E731
        print(f"{r['from_s']:>4}-{r['to_s']:<4}s {r['received']:>9} {f(r['p50_ms']):>8} "
              f"{f(r['p99_ms']):>8} {f(r['broker_cpu_percent'], 0):>13}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
