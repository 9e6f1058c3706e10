"""Configuration updates under traffic (issue 16): the filter's configuration is a file-based
ECDS resource (`harness.start_stack(ecds=True)`) that each test replaces while Envoy runs.

- A new policy applies to new requests without a restart, and no request gets a 5xx while it
  changes (every response of a client running through the swaps is counted).
- A configuration the filter refuses is rejected by Envoy (ECDS `config_fail`) with the field
  error in the log, and the previous one keeps serving.
- Key sets and rate-limit buckets of a provider or rule that stays the same survive a reload;
  records of one that goes away stay bounded where the filter's design allows it (see
  docs/deploy-envoy.md, "Reloading the configuration").
- A reload that changes a provider's issuer never verifies the new issuer's tokens with the
  old keys.

The stack belongs to this module. Every test publishes its own configurations, each with a
marker rule `/version/<n>` (auth none) that answers 200 only once version n serves.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Iterator

import pytest

import harness
from envoy_client import EnvoyClient, connections_per_worker, stat, workers_used
from filter_config import REALM, provider
from idp_client import IdpClient, token_header

pytestmark = pytest.mark.local_only

WORKERS = 2
ECDS = "extension_config_discovery.http_filter.okta_jwt"
FIVE_XX = r"^http\.ingress_http\.downstream_rq_5xx$"  # every 5xx the listener sent
BUCKET = {"requests": 3, "per_s": 3600, "max_keys": 8}  # one group of 8 slots
# No routine refetch while the module runs (with the IdP's max-age, set by the fixture): a
# key fetch then always means a new key record or a lost fetch.
LONG_CACHE = {"cache_duration_s": 3600}


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[harness.Stack]:
    """This module's stack (shadows the session's), configured through an ECDS file."""
    stack = harness.start_stack(tmp_path_factory.mktemp("reload"), concurrency=WORKERS,
                                ecds=True, idp_args=["--servers", "default,second,rotating"],
                                filter_config=lambda v: config(v, version=0))
    try:
        IdpClient(stack.idp_url).control("max-age", {"max_age": 3600})
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def envoy(stack) -> EnvoyClient:
    return EnvoyClient(stack.envoy_url, stack.admin_url)


@pytest.fixture(scope="module")
def idp(stack) -> IdpClient:
    return IdpClient(stack.idp_url)


def config(variables: dict[str, str], *, version: int, providers: dict | None = None,
           orders_scopes: list[str] | None = None, rate_key: str = "header:x-rl",
           extra_rules: tuple[dict, ...] = ()) -> dict:
    """A fresh configuration (nothing shared between calls). Rule 0 `/orders` (token, optional
    scope requirement), rule 1 `/limited` (no token, a bucket per `rate_key` value), then
    `extra_rules`, then the marker of `version`."""
    idp_url = variables["IDP_URL"]
    orders: dict = {"match": {"prefix": "/orders"}}
    if orders_scopes:
        orders["scopes"] = {"all": list(orders_scopes)}
    rules = [orders,
             {"match": {"prefix": "/limited"}, "auth": "none",
              "rate_limits": [{"key": rate_key, **BUCKET}]},
             *extra_rules,
             {"match": {"exact": f"/version/{version}"}, "auth": "none"}]
    if providers is None:
        providers = {"okta": provider(idp_url, "default", jwks=LONG_CACHE)}
    return {"providers": providers, "rules": rules, "realm": REALM}


def ecds_stats(envoy: EnvoyClient) -> dict[str, int]:
    return {name.rsplit(".", 1)[1]: value
            for name, value in envoy.stats(f"^{ECDS.replace('.', '[.]')}[.]").items()}


def publish(stack: harness.Stack, envoy: EnvoyClient, **kwargs) -> int:
    """Publish a valid configuration (`config` arguments) and wait until every worker serves
    it: Envoy accepted the update, and its marker answers 200 on fresh connections spread over
    both workers. Returns its version."""
    version = stack.ecds.version + 1
    before = ecds_stats(envoy)
    assert stack.ecds.write(config(stack.variables, version=version, **kwargs)) == version

    def refused() -> str | None:
        now = ecds_stats(envoy)
        failed = any(now[s] > before[s] for s in ("update_rejected", "update_failure"))
        return "Envoy refused it (see its log)" if failed else None

    harness.wait_until(lambda: ecds_stats(envoy)["update_success"] > before["update_success"],
                       30, f"Envoy to accept configuration {version}", abort=refused)
    marker = f"/version/{version}"
    before = connections_per_worker(envoy)
    streak = 0

    def serving() -> bool:
        nonlocal streak
        streak = streak + 1 if envoy.get(marker).status == 200 else 0
        return streak >= 8 and workers_used(before, connections_per_worker(envoy)) == WORKERS

    harness.wait_until(serving, 30, f"every worker to serve configuration {version}")
    return version


class Traffic:
    """A client sending `path` continuously from `threads` threads, each request on a fresh
    connection (so all workers serve it), until `stop()` or `max_requests` in all. Every
    response's status is counted; a transport error counts as status 0."""

    def __init__(self, envoy: EnvoyClient, path: str, token: str | None = None,
                 threads: int = 2, max_requests: int = 20_000):
        self.statuses: Counter = Counter()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._left = max_requests

        def run() -> None:
            while not self._stop.is_set():
                with self._lock:
                    if self._left <= 0:
                        return
                    self._left -= 1
                try:
                    status = envoy.get(path, token).status
                except OSError as e:
                    status = 0
                    with self._lock:
                        self.errors.append(repr(e))
                with self._lock:
                    self.statuses[status] += 1

        self._threads = [threading.Thread(target=run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> "Traffic":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> Counter:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in self._threads), "a traffic thread hung"
        return self.statuses

    def seen(self, status: int) -> int:
        with self._lock:
            return self.statuses[status]

    def total(self) -> int:
        with self._lock:
            return sum(self.statuses.values())


def drain(envoy: EnvoyClient, key: str) -> None:
    """Spend the `/limited` bucket of `key` (3 tokens, no refill within the module)."""
    got = [envoy.get("/limited", headers={"x-rl": key}).status for _ in range(BUCKET["requests"] + 1)]
    assert got == [200] * BUCKET["requests"] + [429], got


def five_xx_sent(envoy: EnvoyClient) -> int:
    (value,) = envoy.stats(FIVE_XX).values()
    return value


def keys_fetches(idp: IdpClient, server: str) -> int:
    return idp.counts().get(f"GET /oauth2/{server}/v1/keys", 0)


# -- a new policy applies without a restart, with no 5xx on the way --------------------------

def test_policy_changes_apply_under_traffic_without_5xx(stack, envoy, idp):
    publish(stack, envoy)
    token = idp.mint()  # scp: orders:read
    assert envoy.get("/orders", token).status == 200
    assert envoy.get("/added").status == 401  # no rule: auth required, and no token
    pid = stack.processes["envoy"].popen.pid
    five_xx = five_xx_sent(envoy)

    with Traffic(envoy, "/orders", token) as traffic:
        harness.wait_until(lambda: traffic.seen(200) >= 20, 30, "traffic before the swap")
        # A scope requirement added: the same token is now refused.
        publish(stack, envoy, orders_scopes=["orders:write"])
        seen = traffic.seen(403)
        harness.wait_until(lambda: traffic.seen(403) >= seen + 20, 30, "403s under traffic")
        # Removed again, and a rule added.
        publish(stack, envoy, extra_rules=({"match": {"prefix": "/added"}, "auth": "none"},))
        seen = traffic.seen(200)
        harness.wait_until(lambda: traffic.seen(200) >= seen + 20, 30, "200s under traffic")
        statuses = traffic.stop()

    print(f"responses during the swaps: {dict(statuses)}")
    assert not traffic.errors, traffic.errors[:5]
    assert set(statuses) == {200, 403}, statuses  # nothing else, and no 5xx
    assert envoy.get("/added").status == 200
    assert envoy.get("/orders", token).status == 200
    # No restart: the same process, and Envoy answered no 5xx to anyone meanwhile.
    assert stack.processes["envoy"].alive and stack.processes["envoy"].popen.pid == pid
    assert five_xx_sent(envoy) == five_xx


# -- an invalid configuration is refused and the old one keeps serving -----------------------

@pytest.mark.parametrize("breakage, error", [
    (lambda c: c["rules"][0].update(scopes={"all": "orders:write"}), "rules[0].scopes.all"),
    (lambda c: c["rules"][0].update(providers=["nobody"]), "rules[0].providers"),
    (lambda c: c["providers"]["okta"].update(algorithms=["HS256"]), "providers.okta.algorithms"),
], ids=["wrong-type", "unknown-provider", "refused-algorithm"])
def test_an_invalid_configuration_is_refused_and_the_old_one_serves(stack, envoy, idp,
                                                                     breakage, error):
    version = publish(stack, envoy, orders_scopes=["orders:write"])
    reader, writer = idp.mint(), idp.mint({"scp": ["orders:write"]})
    assert envoy.get("/orders", reader).status == 403
    before = ecds_stats(envoy)
    five_xx = five_xx_sent(envoy)
    log = stack.processes["envoy"]
    log_size = len(log.stderr())

    bad = config(stack.variables, version=version + 1)  # no scope requirement: it would admit
    breakage(bad)
    with Traffic(envoy, "/orders", reader) as traffic:
        harness.wait_until(lambda: traffic.total() >= 10, 30, "traffic before the swap")
        stack.ecds.write(bad)
        harness.wait_until(lambda: ecds_stats(envoy)["config_fail"] > before["config_fail"],
                           30, "Envoy to refuse the configuration")
        seen = traffic.total()
        harness.wait_until(lambda: traffic.total() >= seen + 20, 30, "traffic after it")
        statuses = traffic.stop()

    after = ecds_stats(envoy)
    assert after["update_rejected"] == before["update_rejected"] + 1, after
    assert after["update_success"] == before["update_success"], after
    assert after["version"] == before["version"], "the accepted version moved"
    new_log = log.stderr()[log_size:]
    assert f"invalid configuration: {error}" in new_log, new_log[-3000:]
    print(f"responses while refused: {dict(statuses)}")
    assert not traffic.errors, traffic.errors[:5]
    assert set(statuses) == {403}, statuses  # the old policy, throughout
    assert envoy.get("/orders", reader).status == 403
    assert envoy.get("/orders", writer).status == 200
    assert envoy.get(f"/version/{version}").status == 200
    assert envoy.get(f"/version/{version + 1}").status == 401
    assert five_xx_sent(envoy) == five_xx
    publish(stack, envoy)  # and the next valid one is taken


def test_a_file_that_is_no_discovery_response_is_refused(stack, envoy, idp):
    version = publish(stack, envoy, orders_scopes=["orders:write"])
    reader = idp.mint()
    before = ecds_stats(envoy)
    stack.ecds.write_raw('{"version_info": "x", "resources": [')
    harness.wait_until(lambda: ecds_stats(envoy)["update_failure"] > before["update_failure"],
                       30, "Envoy to refuse the file")
    after = ecds_stats(envoy)
    assert after["update_success"] == before["update_success"], after
    assert after["version"] == before["version"]
    assert envoy.get("/orders", reader).status == 403
    assert envoy.get(f"/version/{version}").status == 200
    publish(stack, envoy)


# -- what survives a reload, and what does not leak ------------------------------------------

def test_key_sets_and_buckets_of_what_stays_survive_a_reload(stack, envoy, idp):
    publish(stack, envoy)
    token = idp.mint()
    harness.wait_until(lambda: envoy.get("/orders", token).status == 200, 30, "keys")
    drained = f"k-{uuid.uuid4().hex[:10]}"
    drain(envoy, drained)
    fetches = keys_fetches(idp, "default")
    fetched = stat(envoy.stats("okta_jwt_jwks_fetch_success_okta"),
                   "okta_jwt_jwks_fetch_success_okta")

    # Another rule's policy changes and a rule is appended; provider `okta` and rule 1 stay.
    publish(stack, envoy, orders_scopes=["orders:read"],
            extra_rules=({"match": {"prefix": "/added"}, "auth": "none"},))

    for _ in range(6):  # fresh connections: both workers
        assert envoy.get("/limited", headers={"x-rl": drained}).status == 429
        assert envoy.get("/orders", token).status == 200
    fresh = f"k-{uuid.uuid4().hex[:10]}"
    assert envoy.get("/limited", headers={"x-rl": fresh}).status == 200  # the rule works
    assert keys_fetches(idp, "default") == fetches, "the JWKS was fetched again"
    assert stat(envoy.stats("okta_jwt_jwks_fetch_success_okta"),
                "okta_jwt_jwks_fetch_success_okta") == fetched


def test_records_of_what_goes_away_stay_bounded(stack, envoy, idp):
    """Many reloads, each with a provider of a new name and a rate limit on a new key.

    Rate-limit records are named by rule and limit index: the bucket count of rule 1 (its
    shared `.used` record) stays within `max_keys` however many reloads and keys. Key-set
    records are named by the provider's identity (name, issuer, key source) and proxy-wasm
    cannot delete shared data: each new name is one fetch into its own record, which stays
    (a provider that comes back is served from it without a fetch). That bound, one record per
    identity ever configured, is stated in docs/deploy-envoy.md.
    """
    reloads = 12
    first = keys_fetches(idp, "default")
    gauge = "okta_jwt_ratelimit_buckets_rule_1_limit_0"
    for i in range(reloads):
        name = f"p{i}-{uuid.uuid4().hex[:6]}"
        publish(stack, envoy, providers={name: provider(stack.variables["IDP_URL"], "default",
                                                        jwks=LONG_CACHE)},
                rate_key=f"header:x-rl-{i}")
        token = idp.mint()
        harness.wait_until(lambda: envoy.get("/orders", token).status == 200, 30,
                           f"provider {name} to have keys")
        # A new key value each reload: past max_keys they share the overflow bucket.
        for k in range(2):
            status = envoy.get("/limited", headers={f"x-rl-{i}": f"{i}-{k}"}).status
            assert status in (200, 429), status
        assert stat(envoy.stats(gauge), gauge) <= BUCKET["max_keys"]
    # One fetch per new identity, none per reload beyond that.
    assert keys_fetches(idp, "default") == first + reloads
    # 24 key values over 12 rules in a row at index 1: still one group of 8 slots.
    harness.wait_until(lambda: stat(envoy.stats(gauge), gauge) == BUCKET["max_keys"], 10,
                       f"{gauge} to reach max_keys")

    # Envoy keeps the stats of every provider name the VM ever defined (reported, not bounded).
    print(f"okta_jwt_jwks_keys_* stats after {reloads} reloads: "
          f"{len(envoy.stats('okta_jwt_jwks_keys_'))}")

    # A provider that stays across these reloads is never refetched: back to `okta`.
    publish(stack, envoy)
    token = idp.mint()
    assert envoy.get("/orders", token).status == 200
    assert keys_fetches(idp, "default") == first + reloads


# -- a changed issuer never inherits the old keys --------------------------------------------

def test_a_new_issuer_at_another_uri_is_not_served_the_old_keys(stack, envoy, idp):
    idp_url = stack.variables["IDP_URL"]
    publish(stack, envoy, providers={"okta": provider(idp_url, "default", jwks=LONG_CACHE)})
    assert envoy.get("/orders", idp.mint()).status == 200
    # The new issuer's name on a token signed with a key that only the old JWKS has.
    forged = idp.mint({"iss": idp.issuer("second")}, server="default")
    assert envoy.get("/orders", forged).status == 401

    publish(stack, envoy, providers={"okta": provider(idp_url, "second", jwks=LONG_CACHE)})
    reply = envoy.get("/orders", forged)  # first: no key fetch of the new issuer before it
    assert reply.status == 401, reply
    assert "invalid_token" in (reply.header("www-authenticate") or "")
    assert envoy.get("/orders", idp.mint(server="second")).status == 200
    assert envoy.get("/orders", forged).status == 401


def test_a_new_issuer_at_the_same_uri_is_not_served_the_old_keys(stack, envoy, idp):
    """Same name, same JWKS URI, another issuer: the IdP rotated away the key the old set
    held, so a filter that kept the old record (keyed by name or URI) would admit the token."""
    idp_url = stack.variables["IDP_URL"]
    keys_uri = {"uri": f"{idp_url}/oauth2/rotating/v1/keys", **LONG_CACHE}
    publish(stack, envoy, providers={"okta": provider(idp_url, "rotating", jwks=LONG_CACHE)})
    assert envoy.get("/orders", idp.mint(server="rotating")).status == 200
    new_issuer = f"{idp_url}/oauth2/renamed"
    forged = idp.mint({"iss": new_issuer}, server="rotating")  # the current key: in the old set
    old_kid = token_header(forged)["kid"]
    idp.control("rotate", {"server": "rotating"})
    kids = idp.control("rotate", {"server": "rotating"})["kids"]
    assert old_kid not in kids
    assert envoy.get("/orders", forged).status == 401  # no provider has this issuer yet

    renamed = {"okta": {**provider(idp_url, "rotating"), "issuer": new_issuer,
                        "jwks": {**keys_uri, "cluster": "okta_idp"}}}
    fetches = keys_fetches(idp, "rotating")
    publish(stack, envoy, providers=renamed)
    reply = envoy.get("/orders", forged)
    assert reply.status == 401, reply
    assert keys_fetches(idp, "rotating") > fetches, "the new issuer's keys were never fetched"
    assert envoy.get("/orders", idp.mint({"iss": new_issuer}, server="rotating")).status == 200
    assert envoy.get("/orders", forged).status == 401


# -- a reload while a key fetch is under way ---------------------------------------------------

def test_a_reload_during_a_key_fetch_does_not_hold_requests_up(stack, envoy, idp):
    """The VM whose configuration is replaced never hears its fetch's answer. Its lease would
    keep every other VM from fetching for `timeout_ms` + 2 s, so requests waiting for the
    provider's first key set got 503: now it gives the lease up as it goes (on_done)."""
    idp_url = stack.variables["IDP_URL"]
    slow = {f"slow-{uuid.uuid4().hex[:8]}": provider(
        idp_url, "second", jwks={**LONG_CACHE, "timeout_ms": 8000})}  # a new key record
    delay_ms = 3000
    idp.control("fault", {"server": "second", "mode": "slow", "delay_ms": delay_ms})
    try:
        fetches = keys_fetches(idp, "second")
        publish(stack, envoy, providers=slow)
        harness.wait_until(lambda: keys_fetches(idp, "second") > fetches, 10,
                           "the first key fetch to start")
        started = time.monotonic()
        fetched = stack.processes["envoy"].stderr().count("jwks fetched provider=slow-")
        publish(stack, envoy, providers=slow)  # same provider: only the marker changes
        assert time.monotonic() - started < delay_ms / 1000, "the first fetch may have ended"
        assert stack.processes["envoy"].stderr().count("jwks fetched provider=slow-") == fetched

        reply = envoy.get("/orders", idp.mint(server="second"))  # waits for the keys
        assert reply.status == 200, reply
        assert keys_fetches(idp, "second") == fetches + 2  # the lost one, and the new VM's
    finally:
        idp.control("fault", {"server": "second", "mode": "none"})
