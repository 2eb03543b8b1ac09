"""The REST client's circuit breaker and retry budget (loadgen/resilience.py), on a fake clock,
their ``client.protection`` block, and the driver consulting them against a real nginx."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

from loadgen import record
from loadgen.resilience import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    CircuitBreaker,
    ClientGuard,
    RetryBudget,
)
from loadgen.scenario import (
    BreakerSettings,
    BudgetSettings,
    Protection,
    ScenarioError,
    load_scenario,
    parse_scenario,
)

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.stack import REPO, write_scenario  # noqa: E402


class Clock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def feed(br: CircuitBreaker, outcomes: str) -> list[str]:
    """One attempt per letter (F = failed, S = ok), each answered before the next; the state
    after each."""
    states = []
    for c in outcomes:
        ticket = br.acquire()
        assert ticket is not None, f"refused while {br.state}"
        br.record(ticket, c == "F")
        states.append(br.state)
    return states


def breaker(clock: Clock | None = None, **kw) -> CircuitBreaker:
    return CircuitBreaker(BreakerSettings(**kw), clock or Clock())


# -- circuit breaker -----------------------------------------------------------------------------

def test_the_ratio_is_judged_only_once_min_attempts_are_in():
    br = breaker(window=10, min_attempts=4, failure_ratio=0.5)
    assert feed(br, "FFF") == [CLOSED] * 3            # 3/3 failed, but fewer than 4 attempts
    assert feed(br, "S") == [OPEN]                    # 3/4 >= 0.5
    assert br.opens == 1


def test_the_ratio_threshold_is_inclusive():
    br = breaker(window=10, min_attempts=4, failure_ratio=0.5)
    assert feed(br, "SSSFF") == [CLOSED] * 5          # 1/4, 2/5
    assert feed(br, "F") == [OPEN]                    # 3/6 = 0.5


def test_the_window_slides_over_the_last_n_attempts():
    # a cumulative count (3 of 9) or a window that never forgets would not open here
    br = breaker(window=4, min_attempts=4, failure_ratio=0.75)
    assert feed(br, "SSSSSSFF") == [CLOSED] * 8
    assert feed(br, "F") == [OPEN]                    # last four: S F F F
    # and old failures leave the window: F F S S S S F F stays closed (last four S S F F)
    br = breaker(window=4, min_attempts=4, failure_ratio=0.75)
    assert feed(br, "FFSSSSFF") == [CLOSED] * 8


def test_consecutive_failures_open_it_whatever_the_ratio():
    br = breaker(window=100, min_attempts=100, failure_ratio=1.0, consecutive_failures=3)
    assert feed(br, "FFSFF") == [CLOSED] * 5
    assert feed(br, "F") == [OPEN]
    off = breaker(window=100, min_attempts=100, failure_ratio=1.0, consecutive_failures=0)
    assert feed(off, "F" * 99) == [CLOSED] * 99
    assert feed(off, "F") == [OPEN]                   # only the ratio, at 100/100


def test_open_refuses_for_the_cooldown_then_lets_probes_through():
    clock = Clock()
    br = breaker(clock, window=2, min_attempts=2, failure_ratio=1.0, cooldown_s=5.0,
                 half_open_probes=2)
    feed(br, "FF")
    assert br.state == OPEN
    for dt in (0.0, 2.0, 4.999):
        clock.t = 100.0 + dt
        assert br.acquire() is None
    assert br.short_circuited == 3
    clock.t = 105.0
    assert br.state == HALF_OPEN
    p1, p2 = br.acquire(), br.acquire()
    assert p1 is not None and p2 is not None
    assert br.acquire() is None                       # two probes out: the rest refused
    br.record(p1, False)
    assert br.state == HALF_OPEN                      # one of two
    assert br.acquire() is None                       # slots are not given back by a success
    br.record(p2, False)
    assert br.state == CLOSED
    assert (br.opens, br.closes, br.probes, br.short_circuited) == (1, 1, 2, 5)
    assert feed(br, "F") == [CLOSED]                  # a fresh window: one failure is not 2/2


def test_a_failed_probe_opens_it_again_for_a_full_cooldown():
    clock = Clock()
    br = breaker(clock, window=1, min_attempts=1, failure_ratio=1.0, cooldown_s=3.0)
    feed(br, "F")
    clock.t += 3.0
    probe = br.acquire()
    assert probe is not None and br.state == HALF_OPEN
    clock.t += 1.0
    br.record(probe, True)
    assert br.state == OPEN and br.opens == 2
    clock.t += 2.999                                  # counted from the probe's failure
    assert br.acquire() is None
    clock.t += 0.001
    assert br.acquire() is not None


def test_answers_to_attempts_sent_before_it_opened_are_ignored():
    clock = Clock()
    br = breaker(clock, window=2, min_attempts=2, failure_ratio=1.0, cooldown_s=1.0)
    stale_ok, stale_fail = br.acquire(), br.acquire()
    feed(br, "FF")                                    # opens meanwhile
    clock.t += 1.0
    probe = br.acquire()
    assert br.state == HALF_OPEN
    br.record(stale_ok, False)                        # not a probe: does not close it
    assert br.state == HALF_OPEN
    br.record(stale_fail, True)                       # nor reopen it
    assert br.state == HALF_OPEN and br.opens == 1
    br.record(probe, False)
    assert br.state == CLOSED


# -- retry budget --------------------------------------------------------------------------------

def budget(clock: Clock, **kw) -> RetryBudget:
    return RetryBudget(BudgetSettings(**kw), clock)


def test_the_reserve_alone_allows_min_retries_per_s_times_ttl():
    clock = Clock()
    b = budget(clock, percent=0, ttl_s=10, min_retries_per_s=1)
    assert [b.try_withdraw() for _ in range(11)] == [True] * 10 + [False]
    clock.t += 9.9
    assert not b.try_withdraw()                       # the first withdrawal is still in
    clock.t += 0.1
    assert b.available() == 10 and b.try_withdraw()   # all ten expired together
    assert (b.withdrawn, b.denied) == (11, 2)


def test_retries_are_a_percentage_of_recent_requests():
    clock = Clock()
    b = budget(clock, percent=20, ttl_s=10, min_retries_per_s=0)
    assert not b.try_withdraw()                       # nothing deposited, no reserve
    for _ in range(10):
        b.deposit()
    assert b.available() == 2
    assert [b.try_withdraw() for _ in range(3)] == [True, True, False]
    for _ in range(5):
        b.deposit()
    assert b.try_withdraw() and not b.try_withdraw()  # 3 of 15
    assert b.counts() == {"requests": 15, "retries_allowed": 3, "retries_denied": 3}


def test_deposits_and_withdrawals_expire_after_ttl():
    clock = Clock()
    b = budget(clock, percent=20, ttl_s=10, min_retries_per_s=0)
    for _ in range(10):
        b.deposit()
    assert b.try_withdraw() and b.try_withdraw()
    clock.t += 5
    for _ in range(10):
        b.deposit()
    assert b.try_withdraw() and b.try_withdraw() and not b.try_withdraw()   # 4 of 20
    clock.t += 5                                      # the first 10 and their 2 retries expire
    assert b.available() == 0                         # 2 of the last 10 already used
    clock.t += 5
    assert b.available() == 0 and not b.try_withdraw()


@pytest.mark.parametrize("seed", range(5))
def test_the_budget_holds_and_is_tight_against_a_reference(seed):
    """Random requests and retries on a random clock: a retry is allowed exactly when the last
    ttl_s's retries + 1 <= percent x its requests + min_retries_per_s x ttl_s."""
    rng = random.Random(seed)
    pct, ttl, mrps = rng.choice([10, 20, 50, 100]), rng.choice([1, 5, 10]), rng.choice([0, .5, 2])
    clock = Clock(0.0)
    b = budget(clock, percent=pct, ttl_s=ttl, min_retries_per_s=mrps)
    reqs: deque[float] = deque()
    rets: deque[float] = deque()
    allowed = denied = 0
    for _ in range(3000):
        clock.t += rng.expovariate(20.0)
        for q in (reqs, rets):
            while q and q[0] <= clock.t - ttl:
                q.popleft()
        if rng.random() < 0.6:
            b.deposit()
            reqs.append(clock.t)
            continue
        want = (len(rets) + 1) * 100 <= pct * len(reqs) + mrps * ttl * 100 + 1e-9
        got = b.try_withdraw()
        assert got == want, (clock.t, len(reqs), len(rets))
        if got:
            rets.append(clock.t)
            allowed += 1
        else:
            denied += 1
    assert allowed and denied                         # both sides of the rule were exercised


# -- the guard the driver consults ---------------------------------------------------------------

def test_without_protection_the_guard_allows_everything():
    g = ClientGuard(Protection())
    g.on_request()
    t = g.admit()
    assert t is not None and not g.active
    g.done(t, "timeout")
    assert all(g.may_retry(k) for k in ("timeout", "http_5xx", "refused"))
    assert g.describe() == {"breaker": None, "retry_budget": None}


def test_a_retry_after_a_refused_attempt_costs_no_budget():
    clock = Clock()
    g = ClientGuard(Protection(
        breaker=BreakerSettings(window=1, min_attempts=1, failure_ratio=1.0, cooldown_s=60),
        retry_budget=BudgetSettings(percent=0, ttl_s=10, min_retries_per_s=0.1)), clock)
    g.on_request()
    t = g.admit()
    g.done(t, "http_5xx")                             # opens the breaker
    assert g.may_retry("http_5xx")                    # the one retry of the reserve
    assert g.admit() is None
    assert g.may_retry("circuit_open") and g.may_retry("circuit_open")
    assert not g.may_retry("timeout")
    d = g.describe()
    assert d["breaker"]["opens"] == 1 and d["breaker"]["short_circuited"] == 1
    assert d["breaker"]["cooldown_s"] == 60 and d["breaker"]["half_open_probes"] == 1
    assert d["breaker"]["probes"] == 0                # counts never hide a setting
    assert d["retry_budget"]["retries_allowed"] == 1 and d["retry_budget"]["retries_denied"] == 1


def test_4xx_and_bad_answers_do_not_count_against_the_service():
    g = ClientGuard(Protection(breaker=BreakerSettings(window=1, min_attempts=1,
                                                       failure_ratio=1.0)), Clock())
    for kind in ("http_4xx", "bad_response", None):
        g.done(g.admit(), kind)
    assert g.breaker.state == CLOSED
    g.done(g.admit(), "refused")
    assert g.breaker.state == OPEN


# -- the scenario block --------------------------------------------------------------------------

def seed_with(protection) -> dict:
    d = load_scenario("seed").to_dict()
    d["client"]["protection"] = protection
    return d


def test_protection_is_off_by_default_and_round_trips():
    sc = load_scenario("seed")
    assert sc.client.protection == Protection()
    sc = parse_scenario(seed_with({"breaker": True, "retry_budget": {"percent": 5}}))
    assert sc.client.protection.breaker == BreakerSettings()
    assert sc.client.protection.retry_budget == BudgetSettings(percent=5.0)
    assert parse_scenario(sc.to_dict()) == sc
    assert parse_scenario(seed_with({"breaker": None, "retry_budget": False})).client \
        .protection == Protection()


@pytest.mark.parametrize("bad, says", [
    ({"breakr": {}}, "unknown key 'breakr'"),
    ({"breaker": {"cooldown": 1}}, "client.protection.breaker: unknown key 'cooldown'"),
    ({"breaker": {"window": 5, "min_attempts": 6}}, "min_attempts: must be <= 5"),
    ({"breaker": {"failure_ratio": 0}}, "failure_ratio: must be > 0"),
    ({"breaker": {"failure_ratio": 1.5}}, "failure_ratio: must be <= 1"),
    ({"breaker": {"half_open_probes": 0}}, "half_open_probes: must be >= 1"),
    ({"breaker": {"cooldown_s": 0}}, "cooldown_s: must be > 0"),
    ({"retry_budget": {"ttl_s": 0.5}}, "ttl_s: must be >= 1"),
    ({"retry_budget": {"percent": -1}}, "percent: must be >= 0"),
    ({"retry_budget": 3}, "client.protection.retry_budget: must be a mapping"),
])
def test_bad_protection_settings_name_themselves(bad, says):
    with pytest.raises(ScenarioError, match=says.replace("(", r"\(")):
        parse_scenario(seed_with(bad), "x.yaml")


def test_a_breaker_that_would_make_closed_loop_clients_spin_is_refused():
    d = seed_with({"breaker": True})
    ClientGuard.for_scenario(parse_scenario(d))       # seed retries with backoff: fine
    d["client"]["retry"] = {"policy": "none"}
    with pytest.raises(ScenarioError, match="spin"):
        ClientGuard.for_scenario(parse_scenario(d))
    d["arrival"]["closed"]["think_s"] = 0.5
    ClientGuard.for_scenario(parse_scenario(d))


# -- the driver against a real nginx -------------------------------------------------------------

def drive(tmp_path: Path, name: str, url: str, client: dict, path: str) -> tuple[dict, object]:
    arrival = {"open": {"process": "constant", "rate": {"shape": "constant", "ops_per_s": 50}}}
    scen = write_scenario(tmp_path, name, client=client, arrival=arrival,
                          timing={"warmup_s": 0, "duration_s": 1, "drain_s": 2})
    out = tmp_path / name
    r = subprocess.run([sys.executable, "-m", "loadgen", "drive", "rest", "--scenario", str(scen),
                        "--url", url, "--out", str(out), "--run-id", name, "--path", path],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / "driver.json").read_text()), record.read(out / "requests.parquet")


@pytest.fixture(scope="module")
def noop_nginx(tmp_path_factory):
    from loadgen.noop import start_noop_nginx
    from services import procs

    with procs.Supervisor(tmp_path_factory.mktemp("logs")) as sup:
        yield start_noop_nginx(sup, tmp_path_factory.mktemp("nginx"))


@pytest.mark.stack
def test_the_driver_fails_fast_while_the_breaker_is_open(tmp_path, noop_nginx):
    """Every answer a 503: after 3 in a row the breaker opens for longer than the run, so the
    rest of the requests are refused without being sent, and still accounted for."""
    client = {"timeout_s": 1, "retry": {"policy": "fixed", "max_attempts": 2, "backoff_s": 0.01},
              "protection": {"breaker": {"consecutive_failures": 3, "cooldown_s": 60}}}
    d, df = drive(tmp_path, "brk", noop_nginx.url, client, "/status503")
    c, p = d["counts"], d["protection"]["breaker"]
    sent = df[df["sent_s"].notna()]
    refused = df[df["error_kind"] == "circuit_open"]
    assert c["requests"] == 50 and c["ok"] == 0 and c["failed"] == c["requests"]
    assert p["opens"] == 1 and p["state"] == "open"
    assert 3 <= len(sent) <= 6                        # 3 + what was in flight when it opened
    assert (sent["http_status"] == 503).all()
    assert len(refused) == p["short_circuited"] == len(df) - len(sent)
    assert refused["sent_s"].isna().all() and refused["http_status"].isna().all()
    # refused attempts are retried per the policy (2 attempts), and every request has a row
    assert (df.groupby("request_id")["attempt"].max() == 2).all()
    assert d["crosscheck"]["match"] and d["crosscheck"]["wire"]["exchanges"] == len(sent)


@pytest.mark.stack
def test_the_driver_makes_no_retry_the_budget_denies(tmp_path, noop_nginx):
    """Every answer a 503, three attempts allowed, a budget of 3 retries in all (reserve 0.3/s x
    10 s, no percentage): exactly three retries are sent, the other requests fail with their
    first 503."""
    client = {"timeout_s": 1, "retry": {"policy": "fixed", "max_attempts": 3, "backoff_s": 0.01},
              "protection": {"retry_budget": {"percent": 0, "ttl_s": 10,
                                              "min_retries_per_s": 0.3}}}
    d, df = drive(tmp_path, "bud", noop_nginx.url, client, "/status503")
    n, b = d["counts"]["requests"], d["protection"]["retry_budget"]
    assert n == 50 and len(df) == n + 3 and (df["http_status"] == 503).all()
    assert b["retries_allowed"] == 3 and b["requests"] == n
    assert b["retries_denied"] in (n - 1, n)          # one request may have used two retries
    assert d["counts"]["failed_by_kind"] == {"http_5xx": n}


def test_protected_clients_are_never_sharded(tmp_path):
    """A breaker and a budget judge all the clients together: a sharded driver would split them
    into independent halves, so a protected open loop runs in one process."""
    from loadgen import shards
    from loadgen.scenario import load_scenario

    sc = load_scenario(write_scenario(tmp_path, "p", client={
        "timeout_s": 1, "protection": {"breaker": True}},
        arrival={"open": {"process": "constant", "rate": {"shape": "constant",
                                                          "ops_per_s": 2000}}},
        timing={"warmup_s": 0, "duration_s": 5, "drain_s": 1}))
    plain = load_scenario(write_scenario(tmp_path, "q", client={
        "timeout_s": 1},
        arrival={"open": {"process": "constant", "rate": {"shape": "constant",
                                                          "ops_per_s": 2000}}},
        timing={"warmup_s": 0, "duration_s": 5, "drain_s": 1}))
    assert shards.choose(sc, None, [0, 1]) == 1
    assert shards.choose(plain, None, [0, 1]) == 2
