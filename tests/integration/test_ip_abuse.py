"""Abuse controls on real Envoy (issue 17; SPEC.md, Rules: `ip`, `"count": "denied"`,
`client_ip`; Responses: 403 `ip_denied`).

Two Envoys of this module's own, on one mock IdP and echo upstream:
- `direct`: four workers, one listener on 127.0.0.1 and on ::1 (an `additional_addresses`
  entry added to the shared bootstrap), no `client_ip`: `ip` rules in IPv4 and IPv6, and
  failure throttling counted across the four workers.
- `behind_lb`: `client_ip.xff_trusted_hops` 2 (a CDN and a load balancer in front of Envoy),
  the shared bootstrap as it is (Envoy's `use_remote_address` false): which address the
  filter decides on, and that a client sending its own `X-Forwarded-For` entries cannot
  choose it. Rules that each allow one address show which address was chosen.

Loopback sources (127.0.0.N, all of 127/8 is loopback on Linux) stand for distinct clients.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import pytest

import harness
import render
from assertions import assert_allowed, assert_denied, assert_invalid_token, assert_no_token
from envoy_client import EnvoyClient, Reply, connections_per_worker, stat, workers_used
from filter_config import filter_config
from idp_client import IdpClient

pytestmark = pytest.mark.local_only

WORKERS = 4

# --- the direct Envoy's rules (indexes are part of stat names and log lines) ------------
LOGIN = {"key": "ip", "requests": 5, "per_s": 60, "count": "denied"}  # 5 failures a minute
QUICK = {"key": "ip", "requests": 1, "per_s": 5, "count": "denied"}   # 1 failure per 5 s
DIRECT_RULES = [
    ("/v4-allow", {"auth": "none", "ip": {"allow": ["127.0.0.0/8"]}}),
    ("/v4-deny", {"auth": "none", "ip": {"deny": ["127.0.0.2"]}}),
    ("/v6-allow", {"auth": "none", "ip": {"allow": ["::1/128"]}}),
    ("/v6-deny", {"auth": "none", "ip": {"deny": ["::1"]}}),
    ("/both", {"auth": "none", "ip": {"allow": ["127.0.0.0/8", "::/0"],
                                      "deny": ["127.0.0.2/32", "::1"]}}),
    ("/both6", {"auth": "none", "ip": {"allow": ["2001:db8::/32", "::1"],
                                       "deny": ["2001:db8::/32", "127.0.0.0/8"]}}),
    ("/admin", {"ip": {"allow": ["::1"]}}),  # a token is required as well
    ("/login", {"rate_limits": [LOGIN]}),
    ("/quick", {"rate_limits": [QUICK]}),
]
DIRECT = filter_config({"okta": {}}, [{"match": {"prefix": p}, **r} for p, r in DIRECT_RULES])

# --- behind a CDN and a load balancer ----------------------------------------------------
CDN = "198.51.100.7"  # what the load balancer appends: the CDN's address
CANDIDATES = {"office": "10.1.1.1", "other": "10.2.2.2", "client": "203.0.113.9",
              "cdn": CDN, "loopback": "127.0.0.1", "mapped": "192.0.2.44"}
BEHIND_RULES = (
    [(f"/is/{name}", {"auth": "none", "ip": {"allow": [addr]}})
     for name, addr in CANDIDATES.items()]
    + [("/office", {"auth": "none", "ip": {"allow": ["10.0.0.0/8"]}}),
       ("/keyed", {"auth": "none",
                   "rate_limits": [{"key": "ip", "requests": 1, "per_s": 3600}]})])
BEHIND = filter_config({"okta": {}},
                       [{"match": {"prefix": p}, **r} for p, r in BEHIND_RULES],
                       client_ip={"xff_trusted_hops": 2})


# --- the stacks ----------------------------------------------------------------------------

class Backends:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.processes: list[harness.Process] = []
        idp, self.idp_url = harness.start_mock("mock-idp", workdir,
                                               ["--listen", "127.0.0.1:0", "--servers", "default"])
        self.processes.append(idp)
        echo, self.echo_url = harness.start_mock("echo-upstream", workdir,
                                                 ["--listen", "127.0.0.1:0"])
        self.processes.append(echo)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()


def with_ipv6_listener(bootstrap: str, port: int, ipv6_port: int) -> str:
    """The shared bootstrap with its listener also bound to [::1]:`ipv6_port`."""
    line = f"      socket_address: {{ address: 127.0.0.1, port_value: {port} }}\n"
    assert bootstrap.count(line) == 1, "the listener address line of envoy.yaml.tmpl changed"
    extra = ("    additional_addresses:\n    - address:\n"
             f"        socket_address: {{ address: \"::1\", port_value: {ipv6_port} }}\n")
    return bootstrap.replace(line, line + extra)


def start_envoy(backends: Backends, name: str, config: Callable[[dict], dict], *,
                concurrency: int, ipv6: bool) -> tuple[harness.Process, dict[str, int]]:
    def start(ports: dict[str, int]) -> harness.Process:
        variables = harness.envoy_variables(
            listen_port=ports["listen"], admin_port=ports["admin"],
            idp_port=harness._port_of(backends.idp_url),
            upstream_port=harness._port_of(backends.echo_url))
        text = render.envoy_config(variables, config(variables))
        if ipv6:
            text = with_ipv6_listener(text, ports["listen"], ports["listen6"])
        path = backends.workdir / f"{name}.yaml"
        path.write_text(text)
        return harness.Process(name, [harness.envoy_bin(), "-c", path, "--disable-hot-restart",
                                      "--concurrency", str(concurrency), "--log-level", "info",
                                      "--file-flush-interval-msec", "100"], backends.workdir)

    ports = {"listen": 0, "admin": 0, **({"listen6": 0} if ipv6 else {})}
    proc, picked = harness.start_envoy_on_free_ports(start, ports, admin="admin", ready="listen")
    backends.processes.append(proc)
    return proc, picked


@pytest.fixture(scope="module")
def backends(tmp_path_factory) -> Iterator[Backends]:
    b = Backends(tmp_path_factory.mktemp("ip-abuse"))
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def idp(backends) -> IdpClient:
    return IdpClient(backends.idp_url)


@pytest.fixture(scope="module")
def direct(backends, idp) -> tuple[EnvoyClient, EnvoyClient]:
    """(over 127.0.0.1, over ::1), once the provider has keys."""
    _, ports = start_envoy(backends, "envoy-direct", DIRECT, concurrency=WORKERS, ipv6=True)
    admin = f"http://127.0.0.1:{ports['admin']}"
    v4 = EnvoyClient(f"http://127.0.0.1:{ports['listen']}", admin)
    v6 = EnvoyClient(f"http://[::1]:{ports['listen6']}", admin)
    harness.wait_until(lambda: harness.port_open("::1", ports["listen6"]), 30,
                       "the ::1 listener")
    token = idp.mint()
    harness.wait_until(lambda: v4.get("/quick", token, source="127.0.0.200").status == 200,
                       30, "the provider to have keys", interval=0.25)
    return v4, v6


@pytest.fixture(scope="module")
def behind_lb(backends, idp) -> EnvoyClient:
    _, ports = start_envoy(backends, "envoy-behind-lb", BEHIND, concurrency=2, ipv6=False)
    return EnvoyClient(f"http://127.0.0.1:{ports['listen']}",
                       f"http://127.0.0.1:{ports['admin']}")


def assert_ip_denied(reply: Reply) -> None:
    """403 `ip_denied`: no challenge, the generic `access_denied` body."""
    body = assert_denied(reply, 403, error="access_denied")
    assert body["error_description"] == "Requests from this address are not allowed", body


# --- ip rules, IPv4 and IPv6 -----------------------------------------------------------------

# path -> the sources it lets through, of 127.0.0.1, 127.0.0.2 and ::1
EXPECTED = {
    "/v4-allow": {"127.0.0.1", "127.0.0.2"},
    "/v4-deny": {"127.0.0.1", "::1"},
    "/v6-allow": {"::1"},
    "/v6-deny": {"127.0.0.1", "127.0.0.2"},
    "/both": {"127.0.0.1"},
    "/both6": {"::1"},
}


@pytest.mark.parametrize("path", list(EXPECTED))
def test_allow_deny_and_both_in_ipv4_and_ipv6(direct, path):
    v4, v6 = direct
    replies = {"127.0.0.1": v4.get(path, source="127.0.0.1"),
               "127.0.0.2": v4.get(path, source="127.0.0.2"),
               "::1": v6.get(path)}
    for source, reply in replies.items():
        if source in EXPECTED[path]:
            assert_allowed(reply)
        else:
            assert_ip_denied(reply)


def test_a_refused_network_gets_403_before_any_token_work(direct, idp):
    """On `/admin` (IPv6 loopback only, token required) an IPv4 client gets 403 `ip_denied`
    with no token, a garbage token or a valid one: the network is refused first, and counted
    under its own reason. From ::1 the token is checked as usual."""
    v4, v6 = direct
    token = idp.mint()
    before = v4.stats()
    for t in (None, "not-a-jwt", token):
        assert_ip_denied(v4.get("/admin", t, source="127.0.0.1"))
    after = v4.stats()
    assert stat(after, "okta_jwt_denied_ip_denied") - stat(before, "okta_jwt_denied_ip_denied") == 3
    for reason in ("missing_token", "malformed"):
        name = f"okta_jwt_denied_{reason}"
        assert stat(after, name) == stat(before, name), reason
    assert_no_token(v6.get("/admin"))
    assert_invalid_token(v6.get("/admin", "not-a-jwt"))
    assert_allowed(v6.get("/admin", token))


# --- failure throttling ------------------------------------------------------------------------

CONCURRENT = 40
ATTEMPTS = 3
# A 6th token refills 12 s after the first failure (5 a minute): a round that takes longer
# than this cannot decide, and is run again with a fresh address.
DECISIVE_S = 10.0


def at_once(call: Callable[[], Reply], n: int) -> list[Reply]:
    """`n` calls released together from `n` threads, each on its own connection."""
    start = threading.Barrier(n)

    def one(_: int) -> Reply:
        start.wait(timeout=30)
        return call()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def bad_token(token: str) -> str:
    """The token with its signature altered: parsed, checked and refused (401)."""
    head, _, sig = token.rpartition(".")
    return f"{head}.{'A' if sig[0] != 'A' else 'B'}{sig[1:]}"


def failure_stats(envoy: EnvoyClient) -> dict[str, int]:
    s = envoy.stats()
    return {"counted": stat(s, "okta_jwt_failures_counted"),
            "throttled": stat(s, "okta_jwt_failures_throttled"),
            "bad_signature": stat(s, "okta_jwt_denied_bad_signature")}


def assert_throttled(reply: Reply, limit: dict) -> int:
    """429 with `Retry-After` at most one token's refill and the failure bucket's state."""
    assert_denied(reply, 429, error="rate_limited")
    retry_after = int(reply.header("retry-after") or "0")
    assert 1 <= retry_after <= limit["per_s"] // limit["requests"], reply
    assert reply.header("ratelimit-limit") == str(limit["requests"]), reply
    assert reply.header("ratelimit-remaining") == "0", reply
    return retry_after


def throttle_round(envoy: EnvoyClient, token: str, source: str) -> tuple[Counter, float]:
    bad = bad_token(token)
    started = time.monotonic()
    replies = at_once(lambda: envoy.get("/login", bad, source=source), CONCURRENT)
    elapsed = time.monotonic() - started
    for r in replies:
        if r.status == 401:
            assert_invalid_token(r, bad)
        else:
            assert_throttled(r, LOGIN)
    return Counter(r.status for r in replies), elapsed


def test_forty_concurrent_bad_tokens_give_exactly_five_401s(direct, idp):
    """40 bad tokens at once from one address, on 40 connections over four workers, with a
    limit of 5 failures a minute: exactly 5 × 401 and 35 × 429, and the stats say so. Then a
    valid token from another address passes, and valid tokens from the throttled address are
    refused with 429 (the documented trade-off) until its bucket refills."""
    v4, _ = direct
    token = idp.mint()
    cx_before = connections_per_worker(v4)
    for attempt in range(ATTEMPTS):
        source = f"127.0.1.{attempt + 1}"
        before = failure_stats(v4)
        counts, elapsed = throttle_round(v4, token, source)
        after = failure_stats(v4)
        print(f"attempt {attempt + 1}: {dict(counts)} in {elapsed:.2f} s from {source}")
        if elapsed < DECISIVE_S:
            break
    else:
        pytest.fail(f"no round of {CONCURRENT} requests finished within {DECISIVE_S} s")
    assert counts == {401: 5, 429: 35}, counts
    delta = {k: after[k] - before[k] for k in after}
    assert delta == {"counted": 5, "throttled": 35, "bad_signature": 5}, delta
    used = workers_used(cx_before, connections_per_worker(v4))
    assert used >= 2, f"precondition: the requests should reach several workers ({used})"
    assert_allowed(v4.get("/login", token, source="127.0.1.100"))
    assert_throttled(v4.get("/login", token, source=source), LOGIN)
    assert_throttled(v4.get("/login", source=source), LOGIN)
    assert failure_stats(v4)["throttled"] - after["throttled"] == 2


def test_successes_are_never_counted_and_a_bucket_refills(direct, idp):
    """`/quick` allows 1 failure per 5 s: many valid requests spend nothing; one failure
    empties the bucket, after which even valid tokens get 429, until `Retry-After` has
    passed and the valid token is admitted again."""
    v4, _ = direct
    token, source = idp.mint(), "127.0.2.1"
    for _ in range(10):
        assert_allowed(v4.get("/quick", token, source=source))
    assert_no_token(v4.get("/quick", source=source))  # a missing token is a failure too
    assert_throttled(v4.get("/quick", bad_token(token), source=source), QUICK)
    assert_throttled(v4.get("/quick", token, source=source), QUICK)
    assert_allowed(v4.get("/quick", token, source="127.0.2.2"))
    harness.wait_until(lambda: v4.get("/quick", token, source=source).status == 200, 15,
                       "the failure bucket to refill", interval=0.25)


def test_throttling_counts_per_ipv6_address_too(direct, idp):
    """The ::1 client has a bucket of its own (keyed on its address)."""
    v4, v6 = direct
    token = idp.mint()
    assert_invalid_token(v6.get("/quick", bad_token(token)))
    assert_throttled(v6.get("/quick", token), QUICK)
    assert_allowed(v4.get("/quick", token, source="127.0.2.3"))


# --- client_ip behind proxies, and spoofing ----------------------------------------------------

def chosen(envoy: EnvoyClient, xff: list[str] | None) -> str | None:
    """The name of the candidate address the filter decided on (`None`: none of them)."""
    headers = [("x-forwarded-for", v) for v in xff or []]
    passed = [name for name in CANDIDATES
              if envoy.get(f"/is/{name}", headers=headers).status == 200]
    assert len(passed) <= 1, passed
    return passed[0] if passed else None


def test_the_second_entry_from_the_right_is_the_client(behind_lb):
    # client -> CDN (appends the client) -> load balancer (appends the CDN) -> Envoy
    assert chosen(behind_lb, ["203.0.113.9, " + CDN]) == "client"
    assert chosen(behind_lb, ["10.1.1.1," + CDN]) == "office"
    # Several headers are one list, in order; ports and brackets are not part of it.
    assert chosen(behind_lb, ["10.1.1.1", CDN]) == "office"
    assert chosen(behind_lb, ["10.1.1.1:5555, " + CDN]) == "office"
    # An IPv4-mapped IPv6 entry is its IPv4 address.
    assert chosen(behind_lb, ["::ffff:192.0.2.44, " + CDN]) == "mapped"
    assert chosen(behind_lb, ["[::ffff:192.0.2.44]:80, " + CDN]) == "mapped"


def test_a_client_cannot_choose_its_address_with_its_own_entries(behind_lb):
    """Whatever the client writes to the left (in the header the proxies extend, or in
    headers of its own) is never used: the office range stays closed to 203.0.113.9."""
    for xff in (["10.1.1.1, 203.0.113.9, " + CDN],
                ["10.1.1.1, 10.2.2.2, 10.1.1.1, 203.0.113.9, " + CDN],
                ["10.1.1.1", "10.2.2.2", "203.0.113.9, " + CDN],
                ["10.1.1.1,,", "203.0.113.9, " + CDN]):
        assert chosen(behind_lb, xff) == "client", xff
        assert_ip_denied(behind_lb.get("/office", headers=[("x-forwarded-for", v) for v in xff]))


def test_too_few_entries_or_garbage_fall_back_to_the_downstream_address(behind_lb):
    """Without an address in the second entry, the downstream address as Envoy reports it:
    the connection's peer, or (Envoy's `use_remote_address` false, as here) the last entry.
    Never an entry further left, which the client could have written."""
    assert chosen(behind_lb, None) == "loopback"
    assert chosen(behind_lb, [CDN]) == "cdn"
    for garbage in ("unknown", "junk:1:2", "10.1.1.1.1", "010.1.1.1", "10.1.1.1/8", "",
                    "10.1.1.1 10.2.2.2", "_hidden", "fe80::1%", "[10.1.1.1]"):
        assert chosen(behind_lb, [f"10.1.1.1, {garbage}, {CDN}"]) == "cdn", garbage


def test_ip_rate_limit_keys_use_the_chosen_address(behind_lb):
    """Two clients behind the same proxies have a bucket each; a spoofed entry to the left
    does not buy a fresh bucket."""
    def call(xff: str) -> int:
        return behind_lb.get("/keyed", headers=[("x-forwarded-for", xff)]).status

    assert call("203.0.113.50, " + CDN) == 200
    assert call("203.0.113.51, " + CDN) == 200
    assert call("203.0.113.50, " + CDN) == 429
    assert call("10.9.9.9, 203.0.113.50, " + CDN) == 429
    assert call("::ffff:203.0.113.51, " + CDN) == 429
