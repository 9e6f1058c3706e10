"""Rate limits on real Envoy with four workers (issue 4; SPEC.md, rules → `rate_limits`).

Exact under concurrency (one bucket shared by every worker through compare-and-swap), keyed
by claim, header and client address, refilled continuously, answered 429 with `Retry-After`
and the `RateLimit-*` fields, charged only after authentication and authorization, bounded in
memory by `max_keys` with a strict overflow bucket past it, and counted in the stats.

The stack belongs to this module (mock IdP + echo upstream + Envoy `--concurrency 4`), so its
buckets and counters see no other module's traffic. Each test has its own rule, or its own key
values (subjects, header values) on a shared rule, so no test spends another's tokens whatever
order or subset runs. The `ip` rule and the empty key of the `header:x-api-key` rule are shared
by every request of their test, so each of those rules serves one test only.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import pytest

import harness
from assertions import (assert_allowed, assert_denied, assert_insufficient_scope,
                        assert_invalid_token, assert_no_token)
from envoy_client import EnvoyClient, Reply, connections_per_worker, stat, workers_used
from filter_config import filter_config
from idp_client import IdpClient

pytestmark = pytest.mark.local_only

WORKERS = 4

# Rule index -> (path, rule). The index is part of the stat names, so the order is fixed.
BURST = {"key": "claim:sub", "requests": 5, "per_s": 60, "burst": 5}
REFILL = {"key": "claim:sub", "requests": 1, "per_s": 2, "burst": 1}
IP = {"key": "ip", "requests": 2, "per_s": 3600}
API_KEY = {"key": "header:x-api-key", "requests": 2, "per_s": 3600}
FLOOD = {"key": "header:x-key", "requests": 1, "per_s": 3600, "max_keys": 1000}
SCOPED = {"key": "claim:sub", "requests": 2, "per_s": 3600}

RULES = [
    ("/burst", {"rate_limits": [BURST]}),
    ("/refill", {"rate_limits": [REFILL]}),
    ("/ip", {"auth": "none", "rate_limits": [IP]}),
    ("/apikey", {"auth": "none", "rate_limits": [API_KEY]}),
    ("/flood", {"auth": "none", "rate_limits": [FLOOD]}),
    ("/scoped", {"scopes": {"all": ["orders:write"]}, "rate_limits": [SCOPED]}),
    ("/plain", {}),  # no limit
]
RULE = {path: i for i, (path, _) in enumerate(RULES)}

# One provider (the IdP's `default` server), the rules above.
RATELIMIT_CONFIG = filter_config({"okta": {}},
                                 [{"match": {"prefix": path}, **rule} for path, rule in RULES])


@pytest.fixture(scope="module")
def own(tmp_path_factory) -> Iterator[harness.Stack]:
    """This module's own stack, once its provider has keys."""
    stack = harness.start_stack(tmp_path_factory.mktemp("ratelimit"), concurrency=WORKERS,
                                filter_config=RATELIMIT_CONFIG,
                                idp_args=["--servers", "default"])  # the only server used
    try:
        token = IdpClient(stack.idp_url).mint()
        envoy = EnvoyClient(stack.envoy_url, stack.admin_url)
        harness.wait_until(lambda: envoy.get("/plain", token).status == 200, 30,
                           "the provider to have keys", interval=0.25)
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def envoy(own) -> EnvoyClient:
    """This module's Envoy (shadows the session's `envoy`)."""
    return EnvoyClient(own.envoy_url, own.admin_url)


@pytest.fixture(scope="module")
def idp(own) -> IdpClient:
    """This module's IdP (shadows the session's `idp`)."""
    return IdpClient(own.idp_url)


def new_sub() -> str:
    return f"rl-{uuid.uuid4().hex[:12]}"


def statuses(replies: list[Reply]) -> Counter:
    return Counter(r.status for r in replies)


def at_once(call: Callable[[], Reply], n: int) -> list[Reply]:
    """`n` calls released together from `n` threads, each on its own connection (so they
    spread over Envoy's workers and race for the same bucket)."""
    start = threading.Barrier(n)

    def one(_: int) -> Reply:
        start.wait(timeout=30)
        return call()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def header_int(reply: Reply, name: str) -> int:
    value = reply.header(name)
    assert value is not None and value.isdigit(), (name, reply)
    return int(value)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def token_s(limit: dict) -> int:
    """Whole seconds to refill one token."""
    return ceil_div(limit["per_s"], limit["requests"])


def full_s(limit: dict) -> int:
    """Whole seconds to refill an empty bucket."""
    return ceil_div(limit["per_s"] * limit.get("burst", limit["requests"]), limit["requests"])


def assert_admitted(reply: Reply, limit: dict) -> int:
    """200 through the upstream with the three `RateLimit-*` fields (a charged bucket is
    not full, so Reset is positive); returns Remaining."""
    assert_allowed(reply)
    assert header_int(reply, "ratelimit-limit") == limit["requests"], reply
    assert 0 < header_int(reply, "ratelimit-reset") <= full_s(limit), reply
    return header_int(reply, "ratelimit-remaining")


def assert_limited(reply: Reply, limit: dict) -> int:
    """429 from the filter (SPEC.md, Responses): no challenge, JSON error body, a positive
    whole `Retry-After` no longer than one token's refill, `RateLimit-Limit` = `requests`,
    `RateLimit-Remaining` 0, `RateLimit-Reset` positive and at most a full refill. Returns
    `Retry-After`."""
    assert_denied(reply, 429)
    retry_after = header_int(reply, "retry-after")
    assert 1 <= retry_after <= token_s(limit), reply
    assert header_int(reply, "ratelimit-limit") == limit["requests"], reply
    assert reply.header("ratelimit-remaining") == "0", reply
    assert retry_after <= header_int(reply, "ratelimit-reset") <= full_s(limit), reply
    return retry_after


def rule_stats(envoy: EnvoyClient, path: str) -> dict[str, int]:
    s, i = envoy.stats(), RULE[path]
    return {"admitted": stat(s, f"okta_jwt_ratelimit_admitted_rule_{i}"),
            "limited": stat(s, f"okta_jwt_ratelimit_limited_rule_{i}"),
            "denied": stat(s, "okta_jwt_denied_rate_limited")}


# --- 1 and 8: exact under concurrency, and counted -------------------------------------

CONCURRENT = 40
ROUNDS = 3


def test_concurrent_burst_admits_exactly_the_burst_across_four_workers(envoy, idp):
    """40 requests of one `sub` at once, over 40 connections: exactly `burst` pass, every
    round; each admitted request saw its own `RateLimit-Remaining` (4, 3, 2, 1, 0 in some
    order); the rule's counters grow by exactly the 200s and 429s."""
    observed = []
    cx_before = connections_per_worker(envoy)
    for _ in range(ROUNDS):
        token = idp.mint({"sub": new_sub()})
        before = rule_stats(envoy, "/burst")
        replies = at_once(lambda: envoy.get("/burst", token), CONCURRENT)
        after = rule_stats(envoy, "/burst")
        counts = statuses(replies)
        observed.append(counts[200])
        assert counts == {200: BURST["burst"], 429: CONCURRENT - BURST["burst"]}, counts
        remaining = sorted(assert_admitted(r, BURST) for r in replies if r.status == 200)
        assert remaining == list(range(BURST["burst"])), remaining
        for r in replies:
            if r.status == 429:
                assert_limited(r, BURST)
        assert {k: after[k] - before[k] for k in after} == \
            {"admitted": counts[200], "limited": counts[429], "denied": counts[429]}, \
            (before, after)
    used = workers_used(cx_before, connections_per_worker(envoy))
    print(f"admitted per round of {CONCURRENT} over {used} workers: {observed}")
    assert used >= 2, "precondition: the requests should have reached several workers"


# --- 2: one bucket per key value ---------------------------------------------------------

def test_another_sub_has_its_own_bucket(envoy, idp):
    spent, fresh = idp.mint({"sub": new_sub()}), idp.mint({"sub": new_sub()})
    for _ in range(BURST["burst"]):
        assert_admitted(envoy.get("/burst", spent), BURST)
    assert_limited(envoy.get("/burst", spent), BURST)
    assert assert_admitted(envoy.get("/burst", fresh), BURST) == BURST["burst"] - 1
    assert_limited(envoy.get("/burst", spent), BURST)


# --- 3: continuous refill ----------------------------------------------------------------

REFILL_ATTEMPTS = 5


def test_bucket_refills_after_the_period(envoy, idp):
    """1 request per 2 s, burst 1. The times are bounds on when the filter charged: after a
    request is sent and before its answer arrives. A request whose answer comes 2 s or more
    after the charge may find the token refilled: when a loaded machine is that slow, the
    attempt proves nothing and is made again, with a fresh subject (a fresh bucket)."""
    too_slow = []
    for _ in range(REFILL_ATTEMPTS):
        reason = refill_attempt(envoy, idp.mint({"sub": new_sub()}))
        if reason is None:
            return
        too_slow.append(reason)
    pytest.fail(f"the machine was too slow for every attempt: {too_slow}")


def refill_attempt(envoy: EnvoyClient, token: str) -> str | None:
    """One run of the refill test on a fresh bucket: None once every check has passed, or why
    the timing made this attempt inconclusive (then no assertion was skipped that the replies
    could still decide)."""
    period = REFILL["per_s"]
    sent = time.monotonic()
    assert_admitted(envoy.get("/refill", token), REFILL)
    spent_by = time.monotonic()
    reply = envoy.get("/refill", token)
    if time.monotonic() - sent >= period:
        return "the request right after the charge"
    assert assert_limited(reply, REFILL) in (1, 2)

    # Half a period later: half a token, still limited, one second to wait (two if the
    # first charge came late within its round trip).
    time.sleep(max(0.0, sent + period / 2 - time.monotonic()))
    reply = envoy.get("/refill", token)
    if time.monotonic() - sent >= period:
        return "the half-way request"
    assert assert_limited(reply, REFILL) in (1, 2)

    # A full period after the charge: admitted again, and empty again at once.
    time.sleep(max(0.0, spent_by + period + 0.1 - time.monotonic()))
    recharged = time.monotonic()
    assert assert_admitted(envoy.get("/refill", token), REFILL) == 0
    reply = envoy.get("/refill", token)
    if time.monotonic() - recharged >= period:
        return "the request right after the second charge"
    assert assert_limited(reply, REFILL) in (1, 2)
    return None


# --- 4: ip and header keys -----------------------------------------------------------------

def test_ip_key_is_the_client_address_without_its_port(envoy):
    """Every connection from 127.0.0.1 (each from its own port) spends the same bucket;
    127.0.0.2 has its own."""
    n = 10
    replies = at_once(lambda: envoy.get("/ip"), n)
    assert statuses(replies) == {200: IP["requests"], 429: n - IP["requests"]}, \
        statuses(replies)
    for r in replies:
        if r.status == 429:
            assert_limited(r, IP)
    other = [envoy.get("/ip", source="127.0.0.2") for _ in range(IP["requests"] + 1)]
    assert [r.status for r in other] == [200] * IP["requests"] + [429], other
    assert_limited(envoy.get("/ip"), IP)


def test_header_key_values_have_their_own_buckets_and_missing_is_the_empty_key(envoy):
    per = API_KEY["requests"]
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    for key in (first, second):
        replies = [envoy.get("/apikey", headers={"x-api-key": key}) for _ in range(per + 2)]
        assert [r.status for r in replies] == [200] * per + [429] * 2, (key, replies)
    # No header: the empty key, a bucket of its own (the others are spent, this one not).
    missing = [envoy.get("/apikey") for _ in range(per + 1)]
    assert [r.status for r in missing] == [200] * per + [429], missing
    assert_limited(missing[-1], API_KEY)
    # A third value is still fresh: the missing header spent none of it.
    assert assert_admitted(envoy.get("/apikey", headers={"x-api-key": uuid.uuid4().hex}),
                           API_KEY) == per - 1


# --- 5: the response fields ----------------------------------------------------------------

def test_rate_limit_fields_count_down_then_429(envoy, idp):
    token = idp.mint({"sub": new_sub()})
    resets = []
    for expected in range(BURST["burst"] - 1, -1, -1):  # 4, 3, 2, 1, 0
        last_sent = time.monotonic()
        reply = envoy.get("/burst", token)
        assert assert_admitted(reply, BURST) == expected, reply
        resets.append(header_int(reply, "ratelimit-reset"))
    # Fewer tokens, longer until the bucket is full again.
    assert resets == sorted(resets) and resets[0] < resets[-1], resets
    reply = envoy.get("/burst", token)
    assert_limited(reply, BURST)
    # The same empty bucket: its Reset has only counted down since the last admission (by
    # rounding, and by however long a loaded machine took between the two).
    since_last = int(time.monotonic() - last_sent)
    assert header_int(reply, "ratelimit-reset") >= resets[-1] - 1 - since_last, (resets, reply)
    # A rule without limits adds no RateLimit-* field.
    plain = envoy.get("/plain", token)
    assert_allowed(plain)
    assert [k for k, _ in plain.headers if k.startswith("ratelimit-")] == [], plain


# --- 6: limits come after authentication and authorization --------------------------------

def test_invalid_token_gets_401_and_spends_nothing(envoy, idp):
    sub = new_sub()
    rogue = idp.mint({"sub": sub}, signing_key="rogue")  # bad signature, same sub
    for reply in at_once(lambda: envoy.get("/burst", rogue), 12):
        assert_invalid_token(reply, rogue)
    for _ in range(3):
        assert_no_token(envoy.get("/burst"))
    token = idp.mint({"sub": sub})
    replies = [envoy.get("/burst", token) for _ in range(BURST["burst"] + 1)]
    assert [r.status for r in replies] == [200] * BURST["burst"] + [429], replies
    assert assert_admitted(replies[0], BURST) == BURST["burst"] - 1


def test_insufficient_scope_gets_403_and_spends_nothing(envoy, idp):
    sub = new_sub()
    unscoped = idp.mint({"sub": sub, "scp": ["orders:read"]})
    for _ in range(SCOPED["requests"] + 2):
        assert_insufficient_scope(envoy.get("/scoped", unscoped), "orders:write")
    scoped = idp.mint({"sub": sub, "scp": ["orders:write"]})
    replies = [envoy.get("/scoped", scoped) for _ in range(SCOPED["requests"] + 1)]
    assert [r.status for r in replies] == [200] * SCOPED["requests"] + [429], replies


# --- 7: a key flood stays within max_keys, and past it limits stay strict -----------------

FLOOD_KEYS = 100_000
FLOOD_CONNECTIONS = 24
GAUGE_WAIT_S = 15.0  # the bucket gauge is published about once a second, later when loaded


@pytest.mark.slow
def test_key_flood_stays_within_max_keys_and_overflow_stays_strict(envoy):
    run = uuid.uuid4().hex[:8]
    headers = [{"x-key": f"{run}-{i}"} for i in range(FLOOD_KEYS)]
    before = rule_stats(envoy, "/flood")
    started = time.monotonic()
    flood = Counter(envoy.send_many("GET", "/flood", headers, connections=FLOOD_CONNECTIONS))
    took = time.monotonic() - started
    after = rule_stats(envoy, "/flood")
    overflow = FLOOD.get("burst", FLOOD["requests"])

    def buckets_gauge() -> int:
        return stat(envoy.stats("okta_jwt_ratelimit_buckets"),
                    f"okta_jwt_ratelimit_buckets_rule_{RULE['/flood']}_limit_0")

    # The gauge is published on the filter's timer: wait until it accounts for the flood's
    # admissions (each slot admits its key once, the overflow bucket `overflow` more), and
    # read it as it stands if that never happens, for the assertions below to judge.
    try:
        harness.wait_until(lambda: buckets_gauge() == flood[200] - overflow, GAUGE_WAIT_S,
                           "the bucket gauge to count the flood's buckets")
    except harness.HarnessError:
        pass
    buckets = buckets_gauge()
    print(f"{FLOOD_KEYS} distinct keys in {took:.1f} s ({FLOOD_KEYS / took:.0f} req/s): "
          f"{dict(flood)}; buckets in use {buckets}")

    assert set(flood) <= {200, 429}, flood
    assert 0 < buckets <= FLOOD["max_keys"], buckets  # 1000 is a multiple of 8 already
    # Each slot admitted its first key once (1 token per hour), and the keys that found no
    # slot shared one overflow bucket of the same size: never more than that passed.
    assert flood[200] == buckets + overflow, (flood, buckets)
    assert {k: after[k] - before[k] for k in after} == \
        {"admitted": flood[200], "limited": flood[429], "denied": flood[429]}, (before, after)

    # The table is full and the overflow bucket spent: brand-new keys are limited, not
    # unlimited, whether each comes once or one comes again and again.
    newcomers = [envoy.get("/flood", headers={"x-key": f"new-{uuid.uuid4().hex}"})
                 for _ in range(10)]
    assert statuses(newcomers) == {429: 10}, newcomers
    for r in newcomers:
        assert_limited(r, FLOOD)
    one = {"x-key": f"new-{uuid.uuid4().hex}"}
    assert statuses([envoy.get("/flood", headers=one) for _ in range(5)]) == {429: 5}
