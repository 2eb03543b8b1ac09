"""Child-process supervision for the local stack: start, pin, wait until ready, stop by PID.

Every real part of the embedded default (broker, nginx, uWSGI, Faust) is a child process started
here. Each child gets its own session (so its process group id == its PID) and we signal that
group, which also reaches the workers a master forks (uWSGI, Faust), without ever looking
processes up by name. Pinning is done in the child before exec (``sched_setaffinity``) and is
inherited by everything it forks, so a uWSGI master and its workers share the cores we chose.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def _raise_interrupt(signum: int, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def sigterm_unwinds() -> None:
    """Make SIGTERM (a CI timeout, ``kill``) end this process like Ctrl-C: the exception unwinds
    every ``with Supervisor(...)``, which stops the processes it started by PID. Left at its
    default, SIGTERM ends the process at once and orphans them (they run in sessions of their
    own, so the signal never reaches them). Main thread only, like every signal handler."""
    signal.signal(signal.SIGTERM, _raise_interrupt)


class LaunchError(RuntimeError):
    """A part of the stack could not be started; the message is one line that says what to do."""


class PortInUse(LaunchError):
    pass


class NotReady(LaunchError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free right now on ``host`` (loopback only, by design)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ensure_port_free(port: int, host: str = "127.0.0.1", what: str = "service") -> None:
    """Fail early and clearly instead of letting a child die on EADDRINUSE later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise PortInUse(
                f"{what}: port {host}:{port} is already in use ({e.strerror}); "
                f"stop what holds it or choose another port (0 = pick a free one)"
            ) from None


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def parse_cpus(spec: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """'0', '0,1', '0-1' or [0, 1] -> (0, 1); None/'' -> None (no pinning)."""
    if spec is None or spec == "":
        return None
    if not isinstance(spec, str):
        cpus = tuple(int(c) for c in spec)
    else:
        out: list[int] = []
        for part in spec.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = part.split("-", 1)
                out.extend(range(int(lo), int(hi) + 1))
            elif part:
                out.append(int(part))
        cpus = tuple(out)
    available = os.sched_getaffinity(0)
    bad = [c for c in cpus if c not in available]
    if bad or not cpus:
        raise LaunchError(f"cpu set {spec!r} is not usable here (available: {sorted(available)})")
    return cpus


@dataclass
class Proc:
    name: str
    argv: list[str]
    popen: subprocess.Popen
    log_path: Path
    cpus: tuple[int, ...] | None
    started_at: float = field(default_factory=time.time)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def describe(self) -> dict:
        return {"name": self.name, "pid": self.pid, "argv": self.argv,
                "cpus": list(self.cpus) if self.cpus else None, "log": str(self.log_path)}


class Supervisor:
    """Owns the children it starts; stops them all (reverse start order) on exit, error or Ctrl-C."""

    def __init__(self, log_dir: Path | str):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []

    # -- start -------------------------------------------------------------------------------
    def start(self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              cwd: Path | str | None = None, cpus: Sequence[int] | None = None) -> Proc:
        argv = [str(a) for a in argv]
        log_path = self.log_dir / f"{name}.log"
        log = open(log_path, "ab", buffering=0)
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        pin = tuple(cpus) if cpus else None

        def _in_child() -> None:  # runs between fork and exec
            if pin:
                os.sched_setaffinity(0, pin)

        try:
            popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=full_env, cwd=cwd, start_new_session=True, preexec_fn=_in_child,
                close_fds=True,
            )
        except FileNotFoundError:
            raise LaunchError(f"{name}: executable {argv[0]!r} not found; install it "
                              f"(see README, 'Set-up') or put it on PATH") from None
        finally:
            log.close()
        proc = Proc(name, argv, popen, log_path, pin)
        self.procs.append(proc)
        return proc

    def wait_ready(self, proc: Proc, check: Callable[[], bool], *, timeout: float,
                   what: str, interval: float = 0.1) -> float:
        """Poll ``check`` until it is true; fail fast if the child died. Returns seconds waited."""
        t0 = time.monotonic()
        while True:
            if not proc.alive():
                raise NotReady(f"{proc.name} exited with code {proc.popen.returncode} before "
                               f"{what}; see {proc.log_path}:\n{proc.log_tail()}")
            try:
                if check():
                    return time.monotonic() - t0
            except Exception:  # a readiness probe may fail many times before it succeeds
                pass
            if time.monotonic() - t0 > timeout:
                raise NotReady(f"{proc.name} not ready after {timeout:.0f}s ({what}); "
                               f"see {proc.log_path}:\n{proc.log_tail()}")
            time.sleep(interval)

    # -- stop --------------------------------------------------------------------------------
    def stop(self, proc: Proc, *, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        """Signal the child's process group (pgid == its PID), then SIGKILL what is left."""
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # The leader may be gone while forked workers linger in its group: sweep the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=5)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()

    def describe(self) -> list[dict]:
        return [p.describe() for p in self.procs]


def group_alive(pgid: int) -> bool:
    """True while any process of the group ``pgid`` exists (used by tests: no orphans)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
