"""The JWKS lifecycle on real Envoy (issue 3; SPEC.md "Unknown kid and key rotation").

One key set per provider per Envoy process, shared by every worker; one refetch for an
unknown kid, rate limited; stale keys through IdP failures; 503 with Retry-After until the
first fetch succeeds, then recovery without a restart; Cache-Control max-age and its clamp;
discovery; providers with their own lifecycles; the lifecycle stats.

Every stack here belongs to this module (mock IdP + echo upstream + Envoy), so the IdP's fetch
counts see no other module's traffic. Within a stack each test has its own authorization
server and provider (the IdP counts, faults and rotates per server; the stats are per
provider), so no test's fetches, faults or rotations reach another's numbers, whatever order
or subset of tests runs.
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import pytest

import harness
from assertions import assert_allowed, assert_denied, assert_invalid_token
from envoy_client import EnvoyClient, Reply, connections_per_worker, stat, workers_used
from filter_config import filter_config
from idp_client import IdpClient, token_header

pytestmark = pytest.mark.local_only

MIN_REFETCH_S = 1  # min_refetch_interval_s of the providers that refetch in these tests
# Bound on waits for events that take milliseconds on an idle machine (a tick, a gauge, a
# fetch under way): far above what a loaded machine adds, so only a real failure reaches it.
EVENT_S = 15.0


# --- configuration and stacks -----------------------------------------------------------

def lifecycle_config(providers: dict[str, dict]) -> Callable[[dict[str, str]], dict]:
    """For harness.start_stack: provider NAME (filter_config.provider's arguments: server,
    discovery, jwks fields) accepts the tokens of its authorization server and guards the
    paths under /NAME."""
    return filter_config(providers, [{"match": {"prefix": f"/{name}"}, "providers": [name]}
                                     for name in providers])


def servers(providers: dict[str, dict]) -> list[str]:
    return sorted({spec["server"] for spec in providers.values()})


def idp_args(key_dir: Path, providers: dict[str, dict], *extra: str) -> list[str]:
    # Create every server (and its keys) before Envoy asks for it: generating keys on the
    # first fetch would make that fetch slow enough to time out.
    return ["--servers", ",".join(servers(providers)), "--key-dir", str(key_dir), *extra]


class Own:
    """A stack of this module's own, the clients that drive it, and when it became ready."""

    def __init__(self, stack: harness.Stack):
        self.stack = stack
        self.envoy = EnvoyClient(stack.envoy_url, stack.admin_url)
        self.idp = IdpClient(stack.idp_url)
        self.ready_at = time.monotonic()

    def wait_for_keys(self, providers: dict[str, dict], timeout: float = 15.0) -> None:
        """Until every provider serves a valid token (its start-up fetch may have failed and
        be retried after the back-off); then the stack counts as ready."""
        for name, spec in providers.items():
            token = self.idp.mint(server=spec["server"])
            harness.wait_until(lambda: self.envoy.get(f"/{name}", token).status == 200,
                               timeout, f"provider {name} to have keys", interval=0.25)
        self.ready_at = time.monotonic()

    def up_for_at_least(self, seconds: float) -> None:
        """Sleep until the stack has been ready for `seconds` (the start-up fetches are then
        at least that old)."""
        time.sleep(max(0.0, self.ready_at + seconds - time.monotonic()))


@contextlib.contextmanager
def own_stack(workdir: Path, **kwargs) -> Iterator[Own]:
    stack = harness.start_stack(workdir, **kwargs)
    try:
        yield Own(stack)
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def key_dir(request, tmp_path_factory) -> Path:
    """Where the mock IdPs keep their RSA keys across starts (and across runs, in pytest's
    cache): generating them is most of an IdP's start-up time. Rotated keys are never saved."""
    cache = getattr(request.config, "cache", None)
    return cache.mkdir("mock-idp-keys") if cache else tmp_path_factory.mktemp("mock-idp-keys")


# --- reading the IdP, the tokens and Envoy ----------------------------------------------

def keys_path(server: str) -> str:
    return f"GET /oauth2/{server}/v1/keys"


def discovery_path(server: str) -> str:
    return f"GET /oauth2/{server}/.well-known/openid-configuration"


def keys_fetches(idp: IdpClient, server: str) -> int:
    return idp.counts().get(keys_path(server), 0)


def kid_of(token: str) -> str:
    return token_header(token)["kid"]


def random_kid() -> str:
    return f"unknown-{uuid.uuid4().hex}"


def concurrently(calls: list[Callable[[], Reply]], connections: int = 8) -> list[Reply]:
    """Run the calls over `connections` concurrent connections (each request opens its own
    connection, so they spread over Envoy's workers)."""
    with ThreadPoolExecutor(max_workers=connections) as pool:
        return list(pool.map(lambda call: call(), calls))


def retry_after(reply: Reply) -> int:
    value = reply.header("retry-after")
    assert value is not None and value.isdigit(), reply
    return int(value)


def assert_keys_unavailable(reply: Reply, max_retry_after_s: int) -> None:
    """503 from the filter (never 401, never a pass), with an integral `Retry-After`."""
    assert_denied(reply, 503)
    assert 1 <= retry_after(reply) <= max_retry_after_s, reply


def provider_stats(envoy: EnvoyClient, provider: str) -> dict[str, int]:
    """The lifecycle stats of `provider`: counters fetch_success, fetch_failure and
    refetch_unknown_kid, gauges keys and age_s."""
    s = envoy.stats("okta_jwt_jwks_")
    return {what: stat(s, f"okta_jwt_jwks_{what}_{provider}")
            for what in ("fetch_success", "fetch_failure", "refetch_unknown_kid", "keys", "age_s")}


def fetches_ended(envoy: EnvoyClient) -> None:
    """Until no key fetch is pending or under way on the okta_idp cluster: every fetch Envoy
    has dispatched so far has then reached the IdP (or failed to), so the IdP's counts are
    complete."""
    harness.wait_until(lambda: envoy.upstream_idle("okta_idp"), EVENT_S,
                       "the key fetches under way to end")


def no_fetch_may_still_start(envoy: EnvoyClient, ticks_s: float) -> None:
    """Before counting fetches that must not have happened. A fetch is started by a VM's tick
    (every 50 ms): `ticks_s` is many ticks (a tick that comes later can only hide a fetch,
    never fail a test); then the fetches dispatched by then are waited for."""
    time.sleep(ticks_s)
    fetches_ended(envoy)


def wait_until_every_worker_answers(call: Callable[[], Reply], expected: int, what: str,
                                    on_other: Callable[[Reply], None]) -> None:
    """A set that one VM fetched reaches the other VMs on their next tick, not at once: wait
    until a batch of concurrent requests (spread over the workers) all get `expected`, the
    other replies meanwhile checked by `on_other`."""
    def all_expected() -> bool:
        replies = concurrently([call] * 8)
        for reply in replies:
            if reply.status != expected:
                on_other(reply)
        return all(r.status == expected for r in replies)

    harness.wait_until(all_expected, EVENT_S, what, interval=0.1)


# --- 1 and 7: cold start with four workers; discovery ------------------------------------

COLD = {
    "okta": {"server": "default"},
    "second": {"server": "second"},
    "disco": {"server": "disco", "discovery": True},
}
PER_WORKER_FETCH_S = 2.0  # by then, a fetch per worker (or per VM) would have been made


@pytest.fixture(scope="module")
def cold(tmp_path_factory, key_dir) -> Iterator[Own]:
    """Four workers (and the main thread's VM); default refetch knobs (30 s, 300 s)."""
    with own_stack(tmp_path_factory.mktemp("cold"), concurrency=4,
                   filter_config=lifecycle_config(COLD),
                   idp_args=idp_args(key_dir, COLD)) as own:
        for name in COLD:  # the start-up fetches, without sending a request
            harness.wait_until(lambda: provider_stats(own.envoy, name)["fetch_success"], EVENT_S,
                               f"provider {name}'s start-up fetch")
        yield own


def test_cold_start_fetches_once_per_provider_whatever_the_workers(cold):
    envoy, idp = cold.envoy, cold.idp
    cold.up_for_at_least(PER_WORKER_FETCH_S)
    tokens = {name: idp.mint(server=COLD[name]["server"]) for name in ("okta", "second")}
    before = connections_per_worker(envoy)
    for _ in range(6):  # one connection each, so they spread over the workers
        for name, token in tokens.items():
            assert_allowed(envoy.get(f"/{name}", token))
    assert workers_used(before, connections_per_worker(envoy)) >= 2, \
        "precondition: the requests should have reached several workers"
    no_fetch_may_still_start(envoy, 1.0)  # one a worker's first request made it start
    counts = idp.counts()
    for name in tokens:
        assert counts.get(keys_path(COLD[name]["server"]), 0) == 1, (name, counts)


def test_discovery_reads_the_jwks_uri_once_for_all_workers(cold):
    envoy, idp = cold.envoy, cold.idp
    cold.up_for_at_least(PER_WORKER_FETCH_S)
    token = idp.mint(server="disco")
    for _ in range(6):
        assert_allowed(envoy.get("/disco", token))
    no_fetch_may_still_start(envoy, 1.0)
    counts = idp.counts()
    assert counts.get(discovery_path("disco"), 0) == 1, counts
    assert counts.get(keys_path("disco"), 0) == 1, counts


# --- 2, 3, 4, 7 and 8 on one stack, one authorization server per test -------------------

FAULTS = ["500", "malformed", "empty", "slow"]
FAULT_TIMEOUT_MS = 1000   # timeout_ms of the flaky providers
SLOW_DELAY_MS = 3000      # the IdP's "slow" answers come well after that timeout

LIFE = {
    "okta": {"server": "default", "jwks": {"min_refetch_interval_s": MIN_REFETCH_S}},
    "second": {"server": "second", "jwks": {"min_refetch_interval_s": MIN_REFETCH_S}},
    "rot": {"server": "rot", "jwks": {"min_refetch_interval_s": MIN_REFETCH_S,
                                      "timeout_ms": 3000}},
    "storm": {"server": "storm", "jwks": {"min_refetch_interval_s": 30, "timeout_ms": 2000}},
    "stale": {"server": "stale", "jwks": {"min_refetch_interval_s": MIN_REFETCH_S}},
    "metered": {"server": "metered", "jwks": {"min_refetch_interval_s": MIN_REFETCH_S,
                                              "timeout_ms": FAULT_TIMEOUT_MS}},
    **{f"flaky-{mode}": {"server": f"flaky-{mode}",
                         "jwks": {"min_refetch_interval_s": MIN_REFETCH_S,
                                  "timeout_ms": FAULT_TIMEOUT_MS}} for mode in FAULTS},
}


@pytest.fixture(scope="module")
def life(tmp_path_factory, key_dir) -> Iterator[Own]:
    with own_stack(tmp_path_factory.mktemp("life"), concurrency=4,
                   filter_config=lifecycle_config(LIFE),
                   idp_args=idp_args(key_dir, LIFE)) as own:
        own.wait_for_keys(LIFE)
        yield own


def test_rotation_new_kid_passes_first_time_on_every_worker_and_dropped_kid_fails(life):
    envoy, idp = life.envoy, life.idp
    old = idp.mint(server="rot")
    assert_allowed(envoy.get("/rot", old))
    idp.control("rotate", {"server": "rot"})
    published = idp.control("rotate", {"server": "rot"})["kids"]  # two new keys
    assert kid_of(old) not in published
    new = idp.mint(server="rot")
    assert kid_of(new) == published[0]
    life.up_for_at_least(MIN_REFETCH_S + 0.2)  # a refetch is allowed now

    before, workers = keys_fetches(idp, "rot"), connections_per_worker(envoy)
    # The first requests with the new kid, at once from several workers: all wait for the
    # one shared refetch and pass.
    for reply in concurrently([lambda: envoy.get("/rot", new)] * 8):
        assert_allowed(reply)
    assert keys_fetches(idp, "rot") - before == 1
    # Every worker now has the new set without fetching it.
    for reply in concurrently([lambda: envoy.get("/rot", new)] * 8):
        assert_allowed(reply)
    assert workers_used(workers, connections_per_worker(envoy)) >= 2, \
        "precondition: the requests should have reached several workers"
    assert keys_fetches(idp, "rot") - before == 1
    # The key the IdP dropped no longer verifies, on any worker (once each has adopted the set).
    wait_until_every_worker_answers(lambda: envoy.get("/rot", old), 401,
                                    "every worker to refuse the dropped key", assert_allowed)
    for reply in concurrently([lambda: envoy.get("/rot", old)] * 8):
        assert_invalid_token(reply, old)


STORM_REQUESTS = 200
STORM_S = 3.0
STORM_CONNECTIONS = 16
STORM_MIN_REFETCH_S = LIFE["storm"]["jwks"]["min_refetch_interval_s"]
# The storm ends within this unless its requests are held: were each held for the refetch
# timeout (2 s), the 200 would take 25 s over 16 connections; a loaded machine that slows
# every request to a second's round trip still ends it in time.
STORM_MAX_S = 4 * STORM_S


def test_unknown_kid_storm_is_rejected_without_hammering_the_idp(life):
    envoy, idp = life.envoy, life.idp
    known = idp.mint(server="storm")
    assert_allowed(envoy.get("/storm", known))
    with ThreadPoolExecutor(max_workers=8) as pool:
        tokens = list(pool.map(lambda _: idp.mint(server="storm", header={"kid": random_kid()}),
                               range(STORM_REQUESTS)))
    before = keys_fetches(idp, "storm")
    started = time.monotonic()

    def send(i: int) -> Reply:  # request i leaves at its slot, evenly over STORM_S
        time.sleep(max(0.0, started + i * STORM_S / STORM_REQUESTS - time.monotonic()))
        return envoy.get("/storm", tokens[i])

    with ThreadPoolExecutor(max_workers=STORM_CONNECTIONS) as pool:
        replies = list(pool.map(send, range(STORM_REQUESTS)))
    duration = time.monotonic() - started
    no_fetch_may_still_start(envoy, 0.5)  # one the storm made the filter start
    fetched = keys_fetches(idp, "storm") - before

    assert Counter(r.status for r in replies) == {401: STORM_REQUESTS}, \
        Counter(r.status for r in replies)
    for reply, token in zip(replies, tokens):
        assert_invalid_token(reply, token)
    assert duration < STORM_MAX_S, f"the storm took {duration:.1f} s"
    assert fetched <= 1 + int(duration // STORM_MIN_REFETCH_S), \
        f"{fetched} key fetches during a {duration:.1f} s storm"
    assert_allowed(envoy.get("/storm", known))


def test_expired_tokens_with_unknown_kids_never_make_the_filter_refetch(life):
    # Claims are checked before keys are looked up: replaying expired tokens under made-up
    # kids cannot make the filter call the IdP, even when a refetch would be allowed.
    envoy, idp = life.envoy, life.idp
    assert_allowed(envoy.get("/stale", idp.mint(server="stale")))
    expired = [idp.mint({"exp": 1_000_000_000, "iat": 999_999_000}, server="stale",
                        header={"kid": random_kid()}) for _ in range(20)]
    life.up_for_at_least(MIN_REFETCH_S + 0.2)  # an unknown kid could refetch now
    before_fetches, before = keys_fetches(idp, "stale"), envoy.stats()
    for reply, token in zip(concurrently([lambda t=t: envoy.get("/stale", t) for t in expired]),
                            expired):
        assert_invalid_token(reply, token)
    no_fetch_may_still_start(envoy, 0.5)  # one they made the filter start
    assert keys_fetches(idp, "stale") == before_fetches
    after = envoy.stats()
    assert stat(after, "okta_jwt_denied_expired") - stat(before, "okta_jwt_denied_expired") == 20
    assert stat(after, "okta_jwt_jwks_refetch_unknown_kid_stale") == \
        stat(before, "okta_jwt_jwks_refetch_unknown_kid_stale")
    # The same made-up kid on a token that is still valid does get its refetch (the request
    # waits for it, so it has reached the IdP by the time the 401 comes back).
    fresh = idp.mint(server="stale", header={"kid": kid_of(expired[0])})
    assert_invalid_token(envoy.get("/stale", fresh), fresh)
    assert keys_fetches(idp, "stale") == before_fetches + 1


@pytest.mark.parametrize("mode", FAULTS)
def test_failed_refetch_keeps_the_cached_keys(life, mode):
    envoy, idp, provider = life.envoy, life.idp, f"flaky-{mode}"
    path, server = f"/{provider}", LIFE[provider]["server"]
    known = idp.mint(server=server)
    assert_allowed(envoy.get(path, known))
    life.up_for_at_least(MIN_REFETCH_S + 0.2)
    fault = {"server": server, "mode": mode}
    if mode == "slow":
        fault["delay_ms"] = SLOW_DELAY_MS
    idp.control("fault", fault)
    try:
        before, before_fetches = provider_stats(envoy, provider), keys_fetches(idp, server)

        def during_a_fetch(at_send: dict[str, int], at_reply: dict[str, int]) -> bool:
            """Whether a request sent and answered at these stats was answered while a fetch
            was under way (slow: the refetch had started and not ended) or due (the other
            faults fail at once: the refetch had failed, and no next attempt had reached the
            IdP): then it did not wait for that fetch."""
            if mode == "slow":
                return (at_send["refetch_unknown_kid"] > before["refetch_unknown_kid"]
                        and at_reply["fetch_failure"] == before["fetch_failure"])
            return (at_send["fetch_failure"] > before["fetch_failure"]
                    and keys_fetches(idp, server) == before_fetches + 1)

        unknown = idp.mint(server=server, header={"kid": random_kid()})
        waiter = EnvoyClient(envoy.url, envoy.admin_url)  # a session for the other thread
        with ThreadPoolExecutor(max_workers=1) as pool:
            started = time.monotonic()
            waiting = pool.submit(
                lambda: (waiter.get(path, unknown), provider_stats(waiter, provider)))
            # During the failing refetch and after it (the first retry is due ~1 s later),
            # the cached key keeps verifying, at once: some of these requests are answered
            # while a fetch is under way or due.
            answered_during_a_fetch = sent = 0
            while time.monotonic() < started + FAULT_TIMEOUT_MS / 1000 + 0.8:
                at_send = provider_stats(envoy, provider)
                assert_allowed(envoy.get(path, known))
                answered_during_a_fetch += during_a_fetch(at_send, provider_stats(envoy, provider))
                sent += 1
                time.sleep(0.05)
            reply, at_answer = waiting.result(timeout=15)
        print(f"{mode}: {answered_during_a_fetch} of {sent} known-kid requests answered "
              "while a fetch was under way or due")
        assert answered_during_a_fetch >= 1, "a known kid waited for the refetch"
        assert_invalid_token(reply, unknown)
        # It waited for the refetch (started by then), at most timeout_ms (not the IdP's 3 s):
        # that fetch ends as a failure, where the slow IdP's late answer would be a success.
        assert at_answer["refetch_unknown_kid"] > before["refetch_unknown_kid"], at_answer
        harness.wait_until(lambda: provider_stats(envoy, provider)["fetch_failure"]
                           > before["fetch_failure"], EVENT_S, "the refetch to fail")
        assert provider_stats(envoy, provider)["fetch_success"] == before["fetch_success"]
        assert keys_fetches(idp, server) - before_fetches >= 1, "the unknown kid caused no refetch"
        assert_allowed(envoy.get(path, known))
    finally:
        idp.control("fault", {"server": server, "mode": "none"})
    assert_allowed(envoy.get(path, known))


def test_providers_on_two_servers_keep_their_own_lifecycle(life):
    envoy, idp = life.envoy, life.idp
    old = {"okta": idp.mint(server="default"), "second": idp.mint(server="second")}
    for name, token in old.items():
        assert_allowed(envoy.get(f"/{name}", token))
    life.up_for_at_least(MIN_REFETCH_S + 0.2)

    def fetches() -> tuple[int, int]:
        counts = idp.counts()
        return counts.get(keys_path("default"), 0), counts.get(keys_path("second"), 0)

    before = fetches()
    idp.control("rotate", {"server": "default"})
    assert_allowed(envoy.get("/okta", idp.mint(server="default")))  # new kid: one refetch
    after = fetches()
    assert (after[0] - before[0], after[1] - before[1]) == (1, 0)
    assert_allowed(envoy.get("/second", old["second"]))

    time.sleep(MIN_REFETCH_S + 0.2)
    idp.control("rotate", {"server": "second"})
    assert_allowed(envoy.get("/second", idp.mint(server="second")))
    last = fetches()
    assert (last[0] - after[0], last[1] - after[1]) == (0, 1)
    assert_allowed(envoy.get("/okta", old["okta"]))  # rotation keeps the previous key published


def test_lifecycle_stats_per_provider(life):
    envoy, idp, name = life.envoy, life.idp, "metered"

    def stats() -> dict[str, int]:
        return provider_stats(envoy, name)

    def gauges(what: str, check: Callable[[dict[str, int]], bool]) -> dict[str, int]:
        """The stats once their gauges pass `check`: gauges are published on the filter's
        timer, not at once."""
        return harness.wait_until(lambda: (lambda s: check(s) and s)(stats()), EVENT_S, what)

    def delta(now: dict, then: dict) -> tuple[int, int, int]:
        return tuple(now[k] - then[k]
                     for k in ("fetch_success", "fetch_failure", "refetch_unknown_kid"))

    known = idp.mint(server=name)
    assert_allowed(envoy.get(f"/{name}", known))
    life.up_for_at_least(MIN_REFETCH_S + 0.2)
    start = gauges("the start-up set's age to reach 1 s", lambda s: s["age_s"] >= 1)
    # Start-up: the set is in place (a start-up attempt may have failed and been retried).
    assert start["fetch_success"] >= 1 and start["refetch_unknown_kid"] == 0, start
    assert start["keys"] == 2, start  # the IdP publishes two keys
    assert 1 <= start["age_s"] <= time.monotonic() - life.ready_at + 30, start

    idp.control("rotate", {"server": name})
    sent = time.monotonic()
    assert_allowed(envoy.get(f"/{name}", idp.mint(server=name)))  # unknown kid: refetch
    refetched_at = time.monotonic()

    def age_restarted(s: dict[str, int]) -> bool:  # 0 or 1 when read at once
        return s["age_s"] <= time.monotonic() - sent + 1

    rotated = gauges("the age to restart with the refetch", age_restarted)
    assert delta(rotated, start) == (1, 0, 1), (start, rotated)
    assert rotated["keys"] == 2 and age_restarted(rotated), rotated

    time.sleep(MIN_REFETCH_S + 0.2)
    gauges("the set's age to reach 1 s", lambda s: s["age_s"] >= 1)
    fetches_before = keys_fetches(idp, name)
    idp.control("fault", {"server": name, "mode": "500"})
    try:
        unknown = idp.mint(server=name, header={"kid": random_kid()})
        assert_invalid_token(envoy.get(f"/{name}", unknown), unknown)  # its refetch fails
        failed = stats()  # read before the first retry (~1 s later) can fail as well ...
        attempts = keys_fetches(idp, name) - fetches_before  # ... unless the IdP saw it
        if attempts == 1:
            assert delta(failed, rotated) == (0, 1, 1), (rotated, failed)
        else:  # a loaded machine read the stats after the first retry
            success, failure, unknown_kid = delta(failed, rotated)
            assert success == 0 and 1 <= failure <= attempts, (rotated, failed, attempts)
            assert 1 <= unknown_kid <= attempts, (rotated, failed, attempts)
        # The last good set is kept, and so is its age.
        assert failed["keys"] == 2, failed
        assert 1 <= failed["age_s"] <= time.monotonic() - refetched_at + 1, failed
        assert_allowed(envoy.get(f"/{name}", known))
    finally:
        idp.control("fault", {"server": name, "mode": "none"})


# --- 5: IdP down from the start -----------------------------------------------------------

OUTAGE_CACHE_S = 30  # cache_duration_s: the cap of the retry back-off
RECOVERY_S = 20      # back-off 1, 2, 4, 8 s (+ jitter): the next attempt comes within this


def recovery_bound_s(down_s: float) -> float:
    """How long recovery may take once the IdP is back, after `down_s` seconds of failed
    attempts: the back-off doubles from 1 s (so the last gap is at most the time down, plus
    1 s), capped at cache_duration_s, plus a quarter of jitter; RECOVERY_S at least, and a
    slow start (a loaded machine) only lengthens it."""
    return max(RECOVERY_S, 1.25 * min(down_s + 1, OUTAGE_CACHE_S) + 5)


@pytest.mark.parametrize("outage", ["500", "not_listening"])
def test_idp_down_from_the_start_is_503_then_recovers_without_restart(tmp_path, key_dir,
                                                                      outage):
    providers = {"okta": {"server": "default", "jwks": {"timeout_ms": 1000,
                                                        "cache_duration_s": OUTAGE_CACHE_S}}}
    args = idp_args(key_dir, providers)
    idp_procs: list[harness.Process] = []
    try:
        proc, idp_url = harness.start_mock("mock-idp", tmp_path,
                                           ["--listen", "127.0.0.1:0", *args])
        idp_procs.append(proc)
        idp = IdpClient(idp_url)
        token = idp.mint()
        if outage == "500":
            idp.control("fault", {"server": "default", "mode": "500"})
        else:
            proc.stop()  # restarted later on the same port with the same key files

        envoy_started = time.monotonic()  # (a little before, in fact)
        with own_stack(tmp_path / "stack", idp_url=idp_url,
                       filter_config=lifecycle_config(providers)) as own:
            envoy = own.envoy
            for _ in range(4):
                assert_keys_unavailable(envoy.get("/okta", token), 2 * OUTAGE_CACHE_S)
                time.sleep(0.25)

            if outage == "500":
                attempts = harness.wait_until(
                    lambda: idp.counts().get(keys_path("default"), 0), EVENT_S,
                    "a first key fetch attempt")
                down_for = time.monotonic() - envoy_started
                # One attempt at a time for the whole process, backing off (0, 1, 3, 7 s
                # ...), however many requests came: never more than this.
                assert 1 <= attempts <= 1 + int(math.log2(down_for + 1)), (attempts, down_for)
                idp.control("fault", {"server": "default", "mode": "none"})
            else:
                port = idp_url.rsplit(":", 1)[1]
                restarted, _ = harness.start_mock("mock-idp", tmp_path,
                                                  ["--listen", f"127.0.0.1:{port}", *args],
                                                  name="mock-idp-restarted")
                idp_procs.append(restarted)

            recovering = time.monotonic()
            recovery_s = recovery_bound_s(recovering - envoy_started)
            statuses = []
            while True:
                reply = envoy.get("/okta", token)
                statuses.append(reply.status)
                if reply.status != 503:
                    break
                assert_keys_unavailable(reply, 2 * OUTAGE_CACHE_S)
                assert time.monotonic() - recovering < recovery_s, \
                    f"no recovery within {recovery_s:.0f} s: {Counter(statuses)}"
                time.sleep(0.25)
            assert_allowed(reply)
            wait_until_every_worker_answers(
                lambda: envoy.get("/okta", token), 200, "every worker to have the keys",
                lambda r: assert_keys_unavailable(r, 2 * OUTAGE_CACHE_S))
            for _ in range(6):  # whichever worker takes them
                assert_allowed(envoy.get("/okta", token))
            assert own.stack.processes["envoy"].alive
            if outage == "not_listening":
                # The IdP that came back served one fetch, for every worker.
                fetches_ended(envoy)
                assert keys_fetches(idp, "default") == 1, idp.counts()
    finally:
        for proc in idp_procs:
            proc.stop()


# --- 6: Cache-Control max-age -------------------------------------------------------------

FRESH_FLOOR_S = 30        # SPEC: max-age is clamped to [30 s, 24 h]
NO_REFRESH_BEFORE_S = 10  # "refresh before expiry" may come early, but not this early
SLACK_S = 2.0             # tick, poll interval, the first fetch coming just after "ready"
# How late a refresh due at `fresh` may be seen on a loaded machine (late ticks, polls, a slow
# IdP); without max-age the refresh would come at cache_duration_s (300 s).
LATE_S = 10.0


@pytest.mark.slow
def test_cache_control_max_age_sets_the_refresh_and_is_clamped(tmp_path, key_dir):
    # cache_duration_s 300 and min_refetch_interval_s 30 (defaults): only max-age can make
    # a refresh happen within the window.
    providers = {"okta": {"server": "default"}}
    expected_fresh = {31: 31, 5: FRESH_FLOOR_S}  # max-age sent -> freshness it must give
    with contextlib.ExitStack() as stacks:
        own, started = {}, {}
        for max_age in expected_fresh:  # the longest first: both windows end together
            started[max_age] = time.monotonic()  # the first fetch comes after this ...
            own[max_age] = stacks.enter_context(own_stack(  # ... and about when it is ready
                tmp_path / f"max-age-{max_age}", filter_config=lifecycle_config(providers),
                idp_args=idp_args(key_dir, providers, "--max-age", str(max_age))))
        for o in own.values():
            assert_allowed(o.envoy.get("/okta", o.idp.mint()))

        # When each IdP saw each keys fetch: watched until the refreshes have come and the
        # windows (refresh due + SLACK_S) have ended, or the latest they may come has passed.
        seen = {max_age: [] for max_age in own}
        end = max(own[m].ready_at + fresh + SLACK_S for m, fresh in expected_fresh.items())
        latest = max(own[m].ready_at + fresh + LATE_S for m, fresh in expected_fresh.items())
        while time.monotonic() < latest:
            for max_age, o in own.items():
                count = keys_fetches(o.idp, "default")
                while len(seen[max_age]) < count:
                    seen[max_age].append(time.monotonic())
            if time.monotonic() >= end and all(len(f) >= 2 for f in seen.values()):
                break
            time.sleep(0.25)

        for max_age, fresh in expected_fresh.items():
            fetches = seen[max_age]
            timeline = [(round(t - started[max_age], 1), round(t - own[max_age].ready_at, 1))
                        for t in fetches]  # (since start, since ready), for the message
            assert len(fetches) == 2, (max_age, timeline)  # start-up, then one refresh
            assert fetches[1] - started[max_age] > NO_REFRESH_BEFORE_S, (max_age, timeline)
            assert fetches[1] - own[max_age].ready_at <= fresh + LATE_S, (max_age, timeline)
        for o in own.values():
            assert_allowed(o.envoy.get("/okta", o.idp.mint()))
