"""Client-side protections of the REST driver: a circuit breaker and a retry budget.

The seed scenario's clients retry every timeout with backoff, so past capacity each abandoned
batch comes back as more work (the article's self-denial of service). Production RPC stacks
bound that from the client: a **circuit breaker** stops calling a service that keeps failing and
lets a few probes through after a cooldown, and a **retry budget** caps retries at a fraction of
recent requests, so that retries can never multiply the load.

Both classes are pure: no I/O, time from an injected ``clock() -> seconds``, no locks (the driver
calls them from one gevent thread, and nothing here yields). One of each is shared by all clients
of a driver process, as an application shares one gRPC channel or Finagle client between its
calls. Settings come from the scenario's ``client.protection`` block
(:class:`loadgen.scenario.BreakerSettings`, :class:`loadgen.scenario.BudgetSettings`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict

from loadgen.scenario import (
    BreakerSettings,
    BudgetSettings,
    ClosedArrival,
    Protection,
    Scenario,
    ScenarioError,
)

Clock = Callable[[], float]

#: An attempt the breaker refused: never sent, failed at once.
CIRCUIT_OPEN = "circuit_open"
#: Attempt outcomes that count against the service's health. A 4xx or a malformed 2xx is an
#: answer from a working service (the request was wrong), so it counts as a success here.
BREAKER_FAILURES = frozenset({"timeout", "refused", "http_5xx"})

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    """closed -> open -> half-open -> closed (or open again), as in Hystrix and Resilience4j.

    *closed*: every attempt passes; the last ``window`` outcomes are kept, and the breaker opens
    when at least ``min_attempts`` of them are in and ``failure_ratio`` of them failed, or after
    ``consecutive_failures`` failures in a row (0 = that rule off). *open*: every attempt is
    refused for ``cooldown_s``. *half-open*: ``half_open_probes`` attempts pass, the rest are
    refused; all probes ok closes it (with an empty window), any probe failing opens it again.

    :meth:`acquire` returns a ticket (the state's epoch) or None (refused); :meth:`record` takes
    the ticket back with the outcome. An outcome whose ticket is from an earlier state (an
    attempt sent before the breaker opened, answered after) is ignored: it says nothing about
    the probes, and the window it belonged to is gone.
    """

    def __init__(self, cfg: BreakerSettings, clock: Clock = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self._state = CLOSED
        self._epoch = 0
        self._window: deque[bool] = deque(maxlen=cfg.window)   # True = failed
        self._failed_in_window = 0
        self._in_a_row = 0
        self._opened_at = 0.0
        self._probes_out = 0
        self._probes_ok = 0
        self.opens = 0              # closed/half-open -> open transitions
        self.closes = 0             # half-open -> closed transitions
        self.short_circuited = 0    # attempts refused
        self.probes = 0             # attempts let through while half-open

    @property
    def state(self) -> str:
        self._tick()
        return self._state

    def acquire(self) -> int | None:
        """A ticket to make one attempt now, or None: refused (count it as ``circuit_open``)."""
        self._tick()
        if self._state == CLOSED:
            return self._epoch
        if self._state == HALF_OPEN and self._probes_out < self.cfg.half_open_probes:
            self._probes_out += 1
            self.probes += 1
            return self._epoch
        self.short_circuited += 1
        return None

    def record(self, ticket: int, failed: bool) -> None:
        """The outcome of the attempt ``ticket`` was given for."""
        self._tick()
        if ticket != self._epoch:
            return
        if self._state == HALF_OPEN:
            if failed:
                self._open()
            else:
                self._probes_ok += 1
                if self._probes_ok >= self.cfg.half_open_probes:
                    self._transition(CLOSED)
                    self.closes += 1
            return
        # closed: slide the window
        if len(self._window) == self._window.maxlen and self._window[0]:
            self._failed_in_window -= 1
        self._window.append(failed)
        self._failed_in_window += failed
        self._in_a_row = self._in_a_row + 1 if failed else 0
        cfg = self.cfg
        if (cfg.consecutive_failures and self._in_a_row >= cfg.consecutive_failures) or (
                len(self._window) >= cfg.min_attempts
                and self._failed_in_window >= cfg.failure_ratio * len(self._window)):
            self._open()

    def _tick(self) -> None:
        if self._state == OPEN and self.clock() - self._opened_at >= self.cfg.cooldown_s:
            self._transition(HALF_OPEN)

    def _open(self) -> None:
        self._transition(OPEN)
        self._opened_at = self.clock()
        self.opens += 1

    def _transition(self, state: str) -> None:
        self._state = state
        self._epoch += 1
        self._window.clear()
        self._failed_in_window = self._in_a_row = 0
        self._probes_out = self._probes_ok = 0

    def counts(self) -> dict:
        return {"state": self.state, "opens": self.opens, "closes": self.closes,
                "short_circuited": self.short_circuited, "probes": self.probes}


class RetryBudget:
    """Finagle's ``RetryBudget(ttl, minRetriesPerSec, percentCanRetry)`` (finagle-core,
    com.twitter.finagle.service.RetryBudget, whose defaults are 10 s, 10/s and 20 %).

    Every request deposits into a balance and every retry withdraws from it, the amounts
    scaled as Finagle does (a deposit is 1,000, a withdrawal 1,000 / (percent / 100)), so over
    the last ``ttl_s`` seconds ``retries <= percent/100 x requests + min_retries_per_s x ttl_s``.
    Deposits and withdrawals expire after ``ttl_s``; the reserve (the second term) never does,
    so that a client that has only just started, or sends little, may still retry. Finagle keeps
    the window in ten slices; here it is exact (one entry per event, expired by time).

    gRPC's retry throttling (gRFC A6: a token bucket, ``maxTokens`` and ``tokenRatio``, each
    failure costs a token and each success refunds ``tokenRatio``) bounds the same thing by
    outcomes instead of by time; the time window is easier to state as "at most X % more load".
    """

    SCALE = 1000

    def __init__(self, cfg: BudgetSettings, clock: Clock = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        share = cfg.percent / 100.0
        self.deposit_amount = self.SCALE if share > 0 else 0
        self.withdrawal = int(self.SCALE / share) if share > 0 else 1
        self.reserve = int(round(cfg.min_retries_per_s * cfg.ttl_s * self.withdrawal))
        self._log: deque[tuple[float, int]] = deque()   # (when, amount), oldest first
        self._sum = 0
        self.deposits = 0
        self.withdrawn = 0
        self.denied = 0

    def _expire(self, now: float) -> None:
        horizon = now - self.cfg.ttl_s
        while self._log and self._log[0][0] <= horizon:
            self._sum -= self._log.popleft()[1]

    def _balance(self) -> int:
        self._expire(self.clock())
        return self.reserve + self._sum

    def deposit(self) -> None:
        """One request was made (its first attempt)."""
        self.deposits += 1
        if self.deposit_amount:
            now = self.clock()
            self._expire(now)
            self._log.append((now, self.deposit_amount))
            self._sum += self.deposit_amount

    def try_withdraw(self) -> bool:
        """May one retry be made now? If so it is counted against the budget."""
        if self._balance() < self.withdrawal:
            self.denied += 1
            return False
        self._log.append((self.clock(), -self.withdrawal))
        self._sum -= self.withdrawal
        self.withdrawn += 1
        return True

    def available(self) -> int:
        """Retries that the budget would allow right now."""
        return max(0, self._balance() // self.withdrawal)

    def counts(self) -> dict:
        return {"requests": self.deposits, "retries_allowed": self.withdrawn,
                "retries_denied": self.denied}


class ClientGuard:
    """What the driver consults around each attempt: the breaker before it, the outcome after
    it, the budget before a retry. With neither protection on, every call is a no-op that
    allows, so the unprotected driver behaves exactly as before.

    A retry after a refused attempt (``circuit_open``) does not draw on the budget: it never
    reached the service, and the budget bounds the load retries put on the service.
    """

    ALWAYS = -1   # the ticket when there is no breaker

    def __init__(self, cfg: Protection, clock: Clock = time.monotonic) -> None:
        self.cfg = cfg
        self.breaker = CircuitBreaker(cfg.breaker, clock) if cfg.breaker else None
        self.budget = RetryBudget(cfg.retry_budget, clock) if cfg.retry_budget else None

    @classmethod
    def for_scenario(cls, sc: Scenario, clock: Clock = time.monotonic) -> ClientGuard:
        """The guard of ``sc``'s REST clients; refuses a breaker that would make a closed-loop
        client spin: a refused attempt takes no time, so without a think time or a retry
        backoff such a client would run through requests as fast as the CPU allows."""
        cfg = sc.client.protection
        arr, retry = sc.arrival, sc.client.retry
        if cfg.breaker and isinstance(arr, ClosedArrival) and arr.think_s <= 0 and (
                retry.policy == "none" or retry.backoff_s <= 0):
            raise ScenarioError(
                f"scenario {sc.name!r}: client.protection.breaker with closed-loop clients "
                f"needs arrival.closed.think_s > 0 or a retry policy with backoff_s > 0; a "
                f"refused attempt takes no time and the clients would spin")
        return cls(cfg, clock)

    @property
    def active(self) -> bool:
        return self.breaker is not None or self.budget is not None

    def on_request(self) -> None:
        if self.budget:
            self.budget.deposit()

    def admit(self) -> int | None:
        """A ticket for one attempt, or None: refused by the open breaker."""
        return self.breaker.acquire() if self.breaker else self.ALWAYS

    def done(self, ticket: int, kind: str | None) -> None:
        """The attempt's outcome: None (ok) or its error kind."""
        if self.breaker and ticket != self.ALWAYS:
            self.breaker.record(ticket, kind in BREAKER_FAILURES)

    def may_retry(self, kind: str) -> bool:
        """Whether the budget lets a retry after ``kind`` be made (the policy said yes)."""
        if self.budget is None or kind == CIRCUIT_OPEN:
            return True
        return self.budget.try_withdraw()

    def describe(self) -> dict:
        """Settings and counts, for driver.json."""
        d: dict = {"breaker": None, "retry_budget": None}
        if self.breaker:
            d["breaker"] = {**asdict(self.cfg.breaker), **self.breaker.counts()}
        if self.budget:
            d["retry_budget"] = {**asdict(self.cfg.retry_budget), **self.budget.counts()}
        return d

