"""Introspection (RFC 7662) on real Envoy (issue 15; SPEC.md "Introspection (RFC 7662)" and the
503 row of "Responses").

Opaque tokens of Okta's org authorization server (mock IdP server `org`: issuer = the IdP's URL,
Okta's /oauth2/v1/introspect) allowed and denied; scopes, claim rules, claim headers and rate
limits from the answer; the call's exact shape as the IdP saw it; one call per token per VM for
sequential and concurrent requests, counted at the IdP; negative caching; revocation within
`cache_s`; every failed call a 503 with Retry-After while cached answers still serve; the
circuit breaker opening and closing; `tokens: "all"` revoking a JWT; a secret missing from the
VM's environment refused at load, naming the field.

The main stack runs Envoy with ONE worker, so there is one VM and one answer cache: the IdP's
introspection counts are then exact. A second stack with two workers checks the per-VM bound
(calls <= workers that took connections). Each provider here has its own cache and breaker,
and the IdP counts and faults per authorization server, so tests do not see each other's
calls. Timing: no assertion on durations; where a cache lifetime matters, each request's
start and end (taken around it) decide which answers are certain, and only those are asserted.
"""

from __future__ import annotations

import contextlib
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import pytest

import harness
from assertions import (assert_allowed, assert_claim_denied, assert_denied,
                        assert_insufficient_scope, assert_invalid_token)
from envoy_client import EnvoyClient, Reply, connections_per_worker, stat, workers_used
from filter_config import REALM
from idp_client import DEMO_CLIENT, MINTED, ORG, IdpClient, token_claims, token_sha256

pytestmark = pytest.mark.local_only

SECRET_ENV = "OKTA_JWT_TEST_INTROSPECTION_SECRET"  # the org provider's secret comes from here
ORG_TIMEOUT_MS = 1500
SLOW_MS = 4000  # the "slow" fault: well beyond ORG_TIMEOUT_MS
SHORT_CACHE_S = 2  # cache_s of the providers whose revocation tests wait it out
BRK_FAILURES = 3
BRK_COOL_DOWN_S = 5
BURST = 30
# Bound on waits for events that take milliseconds on an idle machine.
EVENT_S = 15.0

# Mock IdP servers: org (opaque tokens), brk (the breaker's own, so its faults reach no other
# provider), allsrv (JWTs introspected with tokens "all").
SERVERS = f"{ORG},brk,allsrv"

CLAIM_HEADERS = [{"claim": "sub", "header": "x-intro-sub"},
                 {"claim": "uid", "header": "x-intro-uid"},
                 {"claim": "scope", "header": "x-intro-scope"},
                 {"claim": "groups", "header": "x-intro-groups"}]

FAILURE_CLASSES = ("transport", "status_4xx", "status_5xx", "status_other", "too_large",
                   "not_json", "no_active", "not_dispatched", "timed_out")


# --- configuration --------------------------------------------------------------------------

def introspection(idp_url: str, server: str, **fields) -> dict:
    uri = (f"{idp_url}/oauth2/v1/introspect" if server == ORG
           else f"{idp_url}/oauth2/{server}/v1/introspect")
    return {"uri": uri, "cluster": "okta_idp", "client_id": DEMO_CLIENT[0],
            "client_secret": DEMO_CLIENT[1], **fields}


def main_config(variables: dict[str, str], *, secret_env: bool = True) -> dict:
    u = variables["IDP_URL"]
    org = {"issuer": u, "audiences": [u]}
    secret = {"env": SECRET_ENV} if secret_env else DEMO_CLIENT[1]
    providers = {
        # Opaque tokens only (no jwks), the secret from the VM's environment.
        "org": {**org, "claims_to_headers": CLAIM_HEADERS,
                "introspection": introspection(u, ORG, client_secret=secret,
                                               timeout_ms=ORG_TIMEOUT_MS, negative_cache_s=30)},
        "lax": {**org, "introspection": introspection(u, ORG, require_exp=False)},
        "rev": {**org, "introspection": introspection(u, ORG, cache_s=SHORT_CACHE_S,
                                                      negative_cache_s=1)},
        "badsecret": {**org, "introspection": introspection(u, ORG,
                                                            client_secret="not-the-secret")},
        "brk": {"issuer": f"{u}/oauth2/brk", "audiences": ["api://default"],
                "introspection": introspection(
                    u, "brk", timeout_ms=1000,
                    breaker={"failures": BRK_FAILURES, "cool_down_s": BRK_COOL_DOWN_S})},
        # JWTs verified locally, then introspected.
        "allp": {"issuer": f"{u}/oauth2/allsrv", "audiences": ["api://default"],
                 "jwks": {"uri": f"{u}/oauth2/allsrv/v1/keys", "cluster": "okta_idp"},
                 "introspection": introspection(u, "allsrv", tokens="all",
                                                cache_s=SHORT_CACHE_S)},
    }
    rules = [
        {"match": {"prefix": "/org/scoped"}, "providers": ["org"],
         "scopes": {"all": ["orders:write"]}},
        {"match": {"prefix": "/org/admin"}, "providers": ["org"],
         "claims": [{"claim": "groups", "contains": "Admins"}]},
        {"match": {"prefix": "/org/limited"}, "providers": ["org"],
         "rate_limits": [{"key": "claim:sub", "requests": 2, "per_s": 3600}]},
        *({"match": {"prefix": f"/{p}"}, "providers": [p]} for p in providers),
    ]
    return {"providers": providers, "rules": rules, "realm": REALM}


# --- stacks ---------------------------------------------------------------------------------

class Own:
    def __init__(self, stack: harness.Stack):
        self.stack = stack
        self.envoy = EnvoyClient(stack.envoy_url, stack.admin_url)
        self.idp = IdpClient(stack.idp_url)

    def get(self, path: str, token: str | None) -> Reply:
        return self.envoy.get(path, token)

    def timed_get(self, path: str, token: str | None) -> tuple[float, float, Reply]:
        start = time.monotonic()
        reply = self.envoy.get(path, token)
        return start, time.monotonic(), reply

    def calls(self, server: str = ORG) -> int:
        return self.idp.introspect_count(server)

    def stats(self) -> dict[str, int]:
        return self.envoy.stats("okta_jwt_")

    def stat(self, name: str) -> int:
        return stat(self.stats(), name)

    def denied(self, reason: str) -> int:
        return self.stat(f"okta_jwt_denied_{reason}")


@contextlib.contextmanager
def own_stack(workdir: Path, key_dir: Path, **kwargs) -> Iterator[Own]:
    stack = harness.start_stack(workdir, idp_args=["--servers", SERVERS,
                                                   "--key-dir", str(key_dir)], **kwargs)
    try:
        yield Own(stack)
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def key_dir(request, tmp_path_factory) -> Path:
    """The mock IdP's RSA keys, kept across starts in pytest's cache (key generation is most
    of its start-up time)."""
    cache = getattr(request.config, "cache", None)
    return cache.mkdir("mock-idp-keys") if cache else tmp_path_factory.mktemp("mock-idp-keys")


@pytest.fixture(scope="module")
def s(tmp_path_factory, key_dir) -> Iterator[Own]:
    with own_stack(tmp_path_factory.mktemp("introspection"), key_dir, concurrency=1,
                   filter_config=main_config, vm_env={SECRET_ENV: DEMO_CLIENT[1]}) as own:
        # The allsrv provider's keys are fetched at start-up; wait until it serves.
        jwt = own.idp.mint(server="allsrv")
        harness.wait_until(lambda: own.get("/allp", jwt).status == 200, EVENT_S,
                           "provider allp to have keys", interval=0.25)
        yield own


@pytest.fixture(scope="module")
def report(request) -> Iterator[list[str]]:
    """Lines for the closing note (calls counted, latencies), printed after the module."""
    lines: list[str] = []
    yield lines
    writer = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if writer is None or not lines:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        writer.write_line("")
        for line in ["introspection report:", *lines]:
            writer.write_line(f"  {line}")


# --- checks ---------------------------------------------------------------------------------

def retry_after(reply: Reply) -> int:
    value = reply.header("retry-after")
    assert value is not None and value.isdigit() and int(value) >= 1, reply
    return int(value)


def assert_unavailable(reply: Reply, token: str | None = None) -> int:
    """503 from the filter (no challenge, JSON error, never the upstream) with Retry-After."""
    assert_denied(reply, 503, token=token)
    return retry_after(reply)


def assert_inactive(reply: Reply, token: str) -> None:
    """401 invalid_token (the reason, inactive_token, is in the stats and the log)."""
    assert_invalid_token(reply, token)


def unknown_token() -> str:
    """An opaque token the IdP never issued (scanned for in the logs like a minted one)."""
    token = "NeverIssued" + uuid.uuid4().hex + uuid.uuid4().hex
    MINTED.add(token)
    return token


def fresh(s: Own, server: str = ORG, **claims) -> str:
    return s.idp.mint_opaque({"sub": f"u-{uuid.uuid4().hex[:10]}", **claims}, server=server)


# --- allowed and denied ---------------------------------------------------------------------

def test_an_active_opaque_token_is_allowed_and_its_claims_reach_the_upstream(s, report):
    sub, uid = f"alice-{uuid.uuid4().hex[:8]}", f"00u-{uuid.uuid4().hex[:8]}"
    token = s.idp.mint_opaque({"sub": sub, "uid": uid, "scp": ["orders:read", "profile"],
                               "groups": ["Admins", "Ops"]})
    before, allowed = s.calls(), s.stat("okta_jwt_introspection_calls_active_org")
    seen = assert_allowed(s.get("/org/x", token))
    assert s.calls() == before + 1
    assert s.stat("okta_jwt_introspection_calls_active_org") == allowed + 1
    headers = seen["headers"]
    assert headers["x-intro-sub"] == sub
    assert headers["x-intro-uid"] == uid
    assert headers["x-intro-scope"] == "orders:read profile"  # the answer's `scope`
    assert headers["x-intro-groups"] == "Admins Ops"
    assert "authorization" not in headers, "the opaque token went upstream"
    assert all(token not in v for v in headers.values())
    report.append("allowed opaque token: 1 call")


def test_the_call_has_the_exact_shape_rfc_7662_and_okta_expect(s):
    token = fresh(s)
    assert_allowed(s.get("/org", token))
    last = s.idp.introspect_last()
    assert last is not None
    assert last["server"] == ORG
    assert last["method"] == "POST"
    assert last["path"] == "/oauth2/v1/introspect"
    assert last["has_query"] is False
    assert last["content_type"] == "application/x-www-form-urlencoded"
    assert last["authorization_scheme"] == "Basic"
    assert last["auth"] == "basic"
    assert last["client_id"] == DEMO_CLIENT[0]
    assert last["secret_ok"] is True, "the secret from the VM's environment was not sent"
    assert last["form_keys"] == ["token", "token_type_hint"]
    assert last["form_error"] is None
    assert last["token_type_hint"] == "access_token"
    assert last["token_sha256"] == token_sha256(token)


@pytest.mark.parametrize("mint, path, reason", [
    pytest.param(lambda idp: idp.mint_opaque(lifetime_s=-5), "/org", "inactive_token",
                 id="expired at the IdP: inactive"),
    pytest.param(lambda idp: unknown_token(), "/org",
                 "inactive_token", id="unknown to the IdP: inactive"),
    pytest.param(lambda idp: idp.mint_opaque({"iss": "https://elsewhere.example"}), "/org",
                 "wrong_issuer", id="another issuer"),
    pytest.param(lambda idp: idp.mint_opaque({"aud": "api://other"}), "/org",
                 "wrong_audience", id="another audience"),
    pytest.param(lambda idp: idp.mint_opaque({"exp": None}), "/org", "missing_exp",
                 id="no exp"),
    pytest.param(lambda idp: idp.mint_opaque(introspection_extra={"exp": "soon"}), "/org",
                 "malformed", id="exp not a number"),
    pytest.param(lambda idp: idp.mint_opaque(introspection_extra={"exp": "soon"}), "/lax",
                 "malformed", id="exp not a number, require_exp false"),
])
def test_opaque_tokens_are_denied(s, mint, path, reason):
    token = mint(s.idp)
    before, denied = s.calls(), s.denied(reason)
    assert_invalid_token(s.get(path, token), token)
    assert s.calls() == before + 1
    assert s.denied(reason) == denied + 1
    assert s.idp.introspect_last()["token_sha256"] == token_sha256(token)


def test_exp_is_optional_only_where_require_exp_is_false(s):
    token = s.idp.mint_opaque({"exp": None})
    assert_allowed(s.get("/lax", token))
    assert_inactive(s.get("/org", token), token)


@pytest.mark.parametrize("token", ["abc$def", "a,b", "a\"b", "x" * 9000],
                         ids=["dollar", "comma", "quote", "over 8 KiB"])
def test_a_token_outside_b64token_never_reaches_the_idp(s, token):
    before = s.calls()
    assert_invalid_token(s.get("/org", token))
    assert s.calls() == before


def test_scopes_come_from_the_answer(s):
    reader = fresh(s)  # the mock's default: scp [orders:read] -> scope "orders:read"
    writer = fresh(s, scp=["orders:read", "orders:write"])
    assert_insufficient_scope(s.get("/org/scoped", reader), "orders:write")
    assert_allowed(s.get("/org/scoped", writer))


def test_claim_rules_read_the_answer(s):
    admin, user = fresh(s, groups=["Users", "Admins"]), fresh(s, groups=["Users"])
    assert_allowed(s.get("/org/admin", admin))
    denied = s.denied("claim_mismatch")
    assert_claim_denied(s.get("/org/admin", user))
    assert s.denied("claim_mismatch") == denied + 1


def test_rate_limits_key_on_the_answers_claims(s):
    # Three different tokens of one subject share the subject's bucket (2 requests).
    sub = f"limited-{uuid.uuid4().hex[:8]}"
    tokens = [fresh(s, sub=sub) for _ in range(3)]
    assert_allowed(s.get("/org/limited", tokens[0]))
    assert_allowed(s.get("/org/limited", tokens[1]))
    reply = s.get("/org/limited", tokens[2])
    assert reply.status == 429, reply
    assert_allowed(s.get("/org/limited", fresh(s)))  # another subject, another bucket


# --- caching --------------------------------------------------------------------------------

def test_sequential_requests_make_one_call(s, report):
    token = fresh(s)
    before = s.calls()
    hits, misses = (s.stat("okta_jwt_introspection_cache_hit_org"),
                    s.stat("okta_jwt_introspection_cache_miss_org"))
    for _ in range(20):
        assert_allowed(s.get("/org", token))
    assert s.calls() == before + 1
    assert s.stat("okta_jwt_introspection_cache_miss_org") == misses + 1
    assert s.stat("okta_jwt_introspection_cache_hit_org") == hits + 19
    report.append("20 sequential requests, one token, 1 worker: 1 call")


def test_a_concurrent_burst_makes_one_call(s, report):
    token = fresh(s)
    before = s.calls()
    hits, misses = (s.stat("okta_jwt_introspection_cache_hit_org"),
                    s.stat("okta_jwt_introspection_cache_miss_org"))
    # A slow answer (well within timeout_ms) keeps the one call in flight while the burst
    # arrives: the other requests must wait for it, not start their own.
    s.idp.introspect_fault("slow", server=ORG, delay_ms=800)
    try:
        with ThreadPoolExecutor(max_workers=BURST) as pool:
            replies = list(pool.map(lambda _: s.get("/org", token), range(BURST)))
    finally:
        s.idp.introspect_fault("none", server=ORG)
    for r in replies:
        assert_allowed(r)
    assert s.calls() == before + 1
    st = s.stats()
    new_misses = stat(st, "okta_jwt_introspection_cache_miss_org") - misses
    new_hits = stat(st, "okta_jwt_introspection_cache_hit_org") - hits
    assert new_misses + new_hits == BURST
    assert new_misses >= 2, "no request waited for the call in flight: the burst proves nothing"
    report.append(f"burst of {BURST} parallel requests, one new token, 1 worker: 1 call "
                  f"({new_misses} waited for it, {new_hits} cache hits)")


def test_an_inactive_answer_is_cached_for_negative_cache_s(s, report):
    token = fresh(s)
    s.idp.revoke(token)
    before, calls_inactive = s.calls(), s.stat("okta_jwt_introspection_calls_inactive_org")
    denied = s.denied("inactive_token")
    for _ in range(5):
        assert_inactive(s.get("/org", token), token)
    # negative_cache_s is 30 for this provider: all five came within it.
    assert s.calls() == before + 1
    assert s.stat("okta_jwt_introspection_calls_inactive_org") == calls_inactive + 1
    assert s.denied("inactive_token") == denied + 5
    report.append("inactive token, 5 requests within negative_cache_s: 1 call")


def test_an_inactive_answer_expires_after_negative_cache_s(s):
    # Provider rev: negative_cache_s 1. A request that starts more than 1 s after the first
    # answer arrived must ask again.
    token = fresh(s)
    s.idp.revoke(token)
    before = s.calls()
    first_start, first_end, r = s.timed_get("/rev", token)
    assert_inactive(r, token)
    assert s.calls() == before + 1
    polls: list[tuple[float, float, int]] = []

    def asked_again() -> bool:
        a, b, reply = s.timed_get("/rev", token)
        assert_inactive(reply, token)
        polls.append((a, b, s.calls() - before))
        return polls[-1][2] > 1

    harness.wait_until(asked_again, EVENT_S, "a call once negative_cache_s has passed",
                       interval=0.05)
    assert polls[-1][2] == 2, "more than one call for the lapsed entry"
    for a, b, calls in polls:
        if b < first_start + 1:
            assert calls == 1, "a call while the inactive answer was cached"
        if a > first_end + 1:
            assert calls == 2, "no call after negative_cache_s"


def test_a_failed_call_is_never_cached(s):
    token = fresh(s)
    before = s.calls()
    s.idp.introspect_fault(500, server=ORG)
    try:
        assert_unavailable(s.get("/org", token), token)
        assert_unavailable(s.get("/org", token), token)
    finally:
        s.idp.introspect_fault("none", server=ORG)
    assert_allowed(s.get("/org", token))
    assert s.calls() == before + 3


# --- revocation -----------------------------------------------------------------------------

def observe_revocation(s: Own, path: str, token: str, server: str, cache_s: float,
                       attempts: int = 3) -> tuple[int, float, float]:
    """First request (one call, answer cached for `cache_s`), revocation at the IdP, then
    polling until 401. Returns (polls, seconds from revocation to the first 401, seconds the
    cached answer was seen serving after revocation).

    An answer cached while the first request ran lives until somewhere in [start + cache_s,
    end + cache_s]: a poll that ENDED before start + cache_s was certainly served from the
    cache (so must be 200), one that STARTED after end + cache_s certainly was not (so must
    have called the IdP and got `inactive`). Only those certain cases are asserted.
    """
    before = s.calls(server)
    t0, t1, r = s.timed_get(path, token)
    assert_allowed(r)
    assert s.calls(server) == before + 1
    s.idp.revoke(token, server=server)
    revoked_at = time.monotonic()
    polls: list[tuple[float, float, int]] = []
    deadline = revoked_at + cache_s + EVENT_S
    for _ in range(int((cache_s + EVENT_S) / 0.05) + 1):
        a, b, reply = s.timed_get(path, token)
        polls.append((a, b, reply.status))
        if reply.status != 200:
            assert_inactive(reply, token)
            break
        assert b < deadline, f"still 200 {b - revoked_at:.1f}s after revocation"
        time.sleep(0.05)
    else:
        pytest.fail("polling never ended")
    assert polls[-1][2] == 401
    for a, b, status in polls:
        if b < t0 + cache_s:
            assert status == 200, f"401 while the answer cached {b - t0:.2f}s ago was valid"
        if a > t1 + cache_s:
            assert status == 401, f"200 at {a - t1:.2f}s after caching: served past cache_s"
    # Exactly one call after the revocation: the miss that found the token inactive.
    assert s.calls(server) == before + 2
    served = [b - revoked_at for a, b, status in polls if status == 200]
    if not any(b < t0 + cache_s for a, b, _ in polls) and attempts > 1:
        # The machine was too slow to see the cached phase at all: try once more.
        return observe_revocation(s, path, s.idp.mint_opaque(server=server)
                                  if server == ORG else s.idp.mint(server=server),
                                  server, cache_s, attempts - 1)
    assert any(status == 200 for _, _, status in polls), \
        "the cached answer was never seen serving after the revocation"
    return len(polls), polls[-1][0] - revoked_at, max(served)


def test_a_revoked_opaque_token_stops_within_cache_s(s, report):
    n, took, served = observe_revocation(s, "/rev", fresh(s), ORG, SHORT_CACHE_S)
    report.append(f"revoked opaque token (cache_s {SHORT_CACHE_S}): cached answer served up to "
                  f"{served:.2f}s after revocation, 401 from {took:.2f}s ({n} polls, 2 calls)")


def test_tokens_all_introspects_a_jwt_and_revocation_stops_it(s, report):
    jwt = s.idp.mint(server="allsrv")
    assert len(jwt.split(".")) == 3
    n, took, served = observe_revocation(s, "/allp", jwt, "allsrv", SHORT_CACHE_S)
    assert s.idp.introspect_last()["token_sha256"] == token_sha256(jwt)
    report.append(f"tokens all, revoked JWT (cache_s {SHORT_CACHE_S}): served up to "
                  f"{served:.2f}s after revocation, 401 from {took:.2f}s ({n} polls, 2 calls)")


def test_tokens_all_introspects_only_jwts_that_pass_local_checks(s):
    before = s.calls("allsrv")
    bad_aud = s.idp.mint({"aud": "api://other"}, server="allsrv")
    expired = s.idp.mint(server="allsrv", lifetime_s=-600)
    foreign = s.idp.mint(server="allsrv", signing_key="rogue")
    for token in (bad_aud, expired, foreign):
        assert_invalid_token(s.get("/allp", token), token)
    assert s.calls("allsrv") == before
    good = s.idp.mint(server="allsrv")
    assert_allowed(s.get("/allp", good))
    assert s.calls("allsrv") == before + 1
    assert token_claims(good)["iss"] == s.idp.issuer("allsrv")


# --- failures -------------------------------------------------------------------------------

FAULTS = [
    pytest.param({"mode": 500}, ("status_5xx",), id="500"),
    # Envoy 1.40's callout answers a timeout (504) and a reset before headers (503) with a
    # local reply, which the filter can only see as a 5xx status.
    pytest.param({"mode": "slow", "delay_ms": SLOW_MS}, ("transport", "timed_out", "status_5xx"),
                 id="slow beyond timeout_ms"),
    pytest.param({"mode": "malformed"}, ("not_json",), id="malformed"),
    pytest.param({"mode": "empty"}, ("no_active",), id="empty object"),
    pytest.param({"mode": "drop"}, ("transport", "status_5xx"), id="connection dropped"),
    pytest.param({"mode": "active_not_bool"}, ("no_active",), id="active not boolean"),
    pytest.param({"mode": "oversize"}, ("too_large",), id="answer over 64 KiB"),
]


def call_classes(s: Own, provider: str, classes: tuple[str, ...]) -> int:
    st = s.stats()
    return sum(stat(st, f"okta_jwt_introspection_calls_{c}_{provider}") for c in classes)


@pytest.mark.parametrize("fault, classes", FAULTS)
def test_every_failed_call_is_503_and_cached_answers_still_serve(s, fault, classes, report):
    cached, new = fresh(s), fresh(s)
    assert_allowed(s.get("/org", cached))
    before, failed = s.calls(), call_classes(s, "org", classes)
    unavailable = s.denied("introspection_unavailable")
    s.idp.introspect_fault(fault["mode"], server=ORG, delay_ms=fault.get("delay_ms"))
    try:
        assert_unavailable(s.get("/org", new), new)
        assert_allowed(s.get("/org", cached))  # a cached answer is used during the fault
        assert_unavailable(s.get("/org", new), new)  # the failure was not cached
    finally:
        s.idp.introspect_fault("none", server=ORG)
    assert s.calls() == before + 2
    assert call_classes(s, "org", classes) == failed + 2
    assert s.denied("introspection_unavailable") == unavailable + 2
    assert_allowed(s.get("/org", new))  # the endpoint is back: a call, and an answer
    assert s.calls() == before + 3
    if fault["mode"] == "slow":
        # The late answers must not linger in Envoy's connection pool for the next test.
        harness.wait_until(lambda: s.envoy.upstream_idle("okta_idp"), EVENT_S + SLOW_MS / 1000,
                           "the slow calls to end")
    report.append(f"fault {fault['mode']}: 2 failed calls (503), cached token served without "
                  "a call, then 1 call after the fault cleared")


def test_a_wrong_client_secret_is_503_never_a_pass(s):
    token = fresh(s)
    before, failed = s.calls(), s.stat("okta_jwt_introspection_calls_status_4xx_badsecret")
    assert_unavailable(s.get("/badsecret", token), token)
    assert s.calls() == before + 1
    assert s.stat("okta_jwt_introspection_calls_status_4xx_badsecret") == failed + 1
    last = s.idp.introspect_last()
    assert last["client_id"] == DEMO_CLIENT[0] and last["secret_ok"] is False
    assert_allowed(s.get("/org", token))  # the same token with the right secret


def test_the_breaker_opens_and_closes(s, report):
    cached = fresh(s, server="brk")
    assert_allowed(s.get("/brk", cached))
    gauge = "okta_jwt_introspection_breaker_brk"
    harness.wait_until(lambda: s.stat(gauge) == 0, EVENT_S, "the breaker gauge to read closed")
    base = s.calls("brk")
    s.idp.introspect_fault(500, server="brk")
    try:
        last_start = 0.0
        for i in range(BRK_FAILURES):
            token = fresh(s, server="brk")
            last_start, last_end, r = s.timed_get("/brk", token)
            assert_unavailable(r, token)
            assert s.calls("brk") == base + i + 1
        # Open now, from some time in [last_start, last_end], for BRK_COOL_DOWN_S.
        harness.wait_until(lambda: s.stat(gauge) == 1, EVENT_S, "the breaker gauge to read open")
        refused = 0
        for _ in range(3):
            token = fresh(s, server="brk")
            a, b, r = s.timed_get("/brk", token)
            if b < last_start + BRK_COOL_DOWN_S:
                assert 1 <= assert_unavailable(r, token) <= BRK_COOL_DOWN_S
                assert s.calls("brk") == base + BRK_FAILURES, "a call passed the open breaker"
                refused += 1
        assert refused >= 1, "too slow to send a request while the breaker was open"
        assert_allowed(s.get("/brk", cached))  # cached answers serve while it is open
        calls_open = s.calls("brk")
    finally:
        s.idp.introspect_fault("none", server="brk")
    # After the cool-down one call tests the endpoint; it answers, so the breaker closes.
    polls: list[tuple[float, float, int]] = []
    for _ in range(int((BRK_COOL_DOWN_S + EVENT_S) / 0.1) + 1):
        token = fresh(s, server="brk")
        a, b, r = s.timed_get("/brk", token)
        polls.append((a, b, r.status))
        if r.status == 200:
            break
        assert_unavailable(r, token)
        assert s.calls("brk") == calls_open, "a refused request made a call"
        assert b < last_end + BRK_COOL_DOWN_S + EVENT_S, "the breaker never let a call through"
        time.sleep(0.1)
    assert polls[-1][2] == 200
    for a, b, status in polls:
        if a > last_end + BRK_COOL_DOWN_S:
            assert status == 200, f"refused {a - last_end:.2f}s after opening: past cool_down_s"
    assert s.calls("brk") == calls_open + 1, "more than the one test call"
    harness.wait_until(lambda: s.stat(gauge) == 0, EVENT_S, "the breaker gauge to read closed")
    token = fresh(s, server="brk")
    assert_allowed(s.get("/brk", token))
    assert s.calls("brk") == calls_open + 2
    report.append(f"breaker (failures {BRK_FAILURES}, cool_down_s {BRK_COOL_DOWN_S}): "
                  f"{BRK_FAILURES} failed calls, then {refused} + {len(polls) - 1} new tokens "
                  f"refused with no call, 1 test call closed it")


# --- latency --------------------------------------------------------------------------------

def test_latency_of_a_cache_miss_and_a_hit(s, report):
    """Measured, not asserted (a loaded machine decides the numbers)."""
    n = 20
    tokens = [fresh(s) for _ in range(n)]
    misses, hits = [], []
    for t in tokens:
        a, b, r = s.timed_get("/org", t)
        assert_allowed(r)
        misses.append(b - a)
    hot = tokens[0]
    for _ in range(n):
        a, b, r = s.timed_get("/org", hot)
        assert_allowed(r)
        hits.append(b - a)
    miss_ms, hit_ms = statistics.median(misses) * 1000, statistics.median(hits) * 1000
    report.append(f"latency (client side, sequential, median of {n}): cache miss "
                  f"{miss_ms:.2f} ms, hit {hit_ms:.2f} ms, extra for a miss {miss_ms - hit_ms:.2f} ms")


# --- two workers: one call per token per VM -----------------------------------------------

def opaque_only_config(variables: dict[str, str]) -> dict:
    """Okta's org server alone: one provider, introspection, no keys, no rate limits."""
    u = variables["IDP_URL"]
    return {"providers": {"org": {"issuer": u, "audiences": [u],
                                  "introspection": introspection(u, ORG)}},
            "rules": [{"match": {"prefix": "/"}, "providers": ["org"]}], "realm": REALM}


def wide_config(variables: dict[str, str]) -> dict:
    """The opaque-only configuration plus a JWT provider with remote keys (which makes the
    filter run its tick; see the test below for a configuration without one)."""
    config = opaque_only_config(variables)
    u = variables["IDP_URL"]
    config["providers"]["jwt"] = {
        "issuer": f"{u}/oauth2/allsrv", "audiences": ["api://default"],
        "jwks": {"uri": f"{u}/oauth2/allsrv/v1/keys", "cluster": "okta_idp"}}
    config["rules"].insert(0, {"match": {"prefix": "/jwt"}, "providers": ["jwt"]})
    return config


def test_an_opaque_only_configuration_answers_every_request_of_a_burst(tmp_path_factory,
                                                                       key_dir):
    with own_stack(tmp_path_factory.mktemp("introspection-opaque-only"), key_dir,
                   concurrency=1, filter_config=opaque_only_config) as o:
        client = EnvoyClient(o.stack.envoy_url, o.stack.admin_url, timeout=8.0)
        token = o.idp.mint_opaque()
        o.idp.introspect_fault("slow", server=ORG, delay_ms=500)
        try:
            with ThreadPoolExecutor(max_workers=8) as pool:
                statuses = list(pool.map(lambda _: _status(client, token), range(8)))
        finally:
            o.idp.introspect_fault("none", server=ORG)
        assert statuses == [200] * 8, statuses


def _status(client: EnvoyClient, token: str) -> int | str:
    try:
        return client.get("/x", token).status
    except OSError as e:  # timed out: never answered
        return type(e).__name__


def test_with_two_workers_calls_are_at_most_one_per_worker(tmp_path_factory, key_dir, report):
    with own_stack(tmp_path_factory.mktemp("introspection-wide"), key_dir, concurrency=2,
                   filter_config=wide_config) as w:
        token = w.idp.mint_opaque()
        before, conns = w.calls(), connections_per_worker(w.envoy)
        for _ in range(20):  # a fresh connection each: they spread over the workers
            assert_allowed(w.get("/x", token))
        used = workers_used(conns, connections_per_worker(w.envoy))
        sequential = w.calls() - before
        assert 1 <= sequential <= used, (sequential, used)

        token = w.idp.mint_opaque()
        before, conns = w.calls(), connections_per_worker(w.envoy)
        w.idp.introspect_fault("slow", server=ORG, delay_ms=800)
        try:
            with ThreadPoolExecutor(max_workers=BURST) as pool:
                replies = list(pool.map(lambda _: w.get("/x", token), range(BURST)))
        finally:
            w.idp.introspect_fault("none", server=ORG)
        for r in replies:
            assert_allowed(r)
        used_burst = workers_used(conns, connections_per_worker(w.envoy))
        burst = w.calls() - before
        assert 1 <= burst <= used_burst, (burst, used_burst)
    report.append(f"2 workers: 20 sequential requests -> {sequential} call(s) over {used} "
                  f"worker(s); burst of {BURST} -> {burst} call(s) over {used_burst} worker(s)")


# --- configuration --------------------------------------------------------------------------

def test_a_secret_missing_from_the_vm_environment_fails_at_load(tmp_path):
    field = "providers.org.introspection.client_secret"
    listen, admin = harness.free_port(), harness.free_port()
    variables = harness.envoy_variables(listen_port=listen, admin_port=admin,
                                        idp_port=harness.free_port(),
                                        upstream_port=harness.free_port())
    admin_url = f"http://127.0.0.1:{admin}"
    # The environment variable is deliberately absent (no vm_env).
    proc = harness.start_envoy(tmp_path, variables, filter_config=main_config(variables),
                               name="envoy-missing-secret")
    try:
        def gave_up() -> str | None:
            if field in proc.output():
                return None
            if not proc.alive:
                return proc.exit_reason()
            if harness.envoy_ready(admin_url, listen):
                return "Envoy accepted the configuration"
            return None

        harness.wait_until(lambda: field in proc.output(), 60, f"a log line naming {field}",
                           interval=0.1, abort=gave_up)
        line = next(ln for ln in proc.output().splitlines() if field in ln)
        assert SECRET_ENV in line, line  # names the variable it looked for
        harness.wait_until(lambda: not proc.alive or harness.http_status(f"{admin_url}/ready")
                           is not None, 60, "Envoy to exit or to settle", interval=0.1)
        if proc.alive and harness.port_open("127.0.0.1", listen):
            reply = EnvoyClient(f"http://127.0.0.1:{listen}", admin_url).get("/org", "abc")
            assert reply.status != 200, reply
    finally:
        proc.stop()
