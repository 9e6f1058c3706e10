"""JWKS fetching: discovery, refetch on an unknown kid (once, shared), rotation, stale keys
on failure, and 503 when a provider never got keys.

Rotation tests use their own authorization server and provider ("rotating", refetch at most
once a second) so that they cannot disturb the other modules' tokens.
"""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from client import assert_allowed, assert_denied, assert_invalid_token

ROTATING = "rotating"
MIN_REFETCH_S = 1  # providers.rotating.jwks.min_refetch_interval_s


@pytest.fixture
def rotating(api):
    """Let the provider's refetch interval pass, and leave the IdP without faults."""
    time.sleep(MIN_REFETCH_S + 0.5)
    yield
    api.control("fault", {"server": ROTATING, "mode": "none"})


def keys_fetches(api, server: str) -> int:
    return api.idp_counts().get(f"GET /oauth2/{server}/v1/keys", 0)


def test_discovery_finds_the_jwks_uri(api):
    assert_allowed(api.get("/strict", api.mint(server="strict")))
    counts = api.idp_counts()
    assert counts.get("GET /oauth2/strict/.well-known/openid-configuration", 0) >= 1, counts
    assert counts.get("GET /oauth2/strict/v1/keys", 0) >= 1, counts


def test_new_key_is_fetched_once_for_concurrent_requests(api, rotating):
    assert_allowed(api.get("/rotating", api.mint(server=ROTATING)))  # keys cached now
    time.sleep(MIN_REFETCH_S + 0.5)
    api.control("rotate", {"server": ROTATING})
    token = api.mint(server=ROTATING)  # signed by the new key: unknown kid to the filter
    before = keys_fetches(api, ROTATING)
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda _: api.get("/rotating", token), range(8)))
    for reply in replies:
        assert_allowed(reply)
    assert keys_fetches(api, ROTATING) - before == 1


def test_dropped_key_stops_verifying(api, rotating):
    old = api.mint(server=ROTATING)
    assert_allowed(api.get("/rotating", old))
    api.control("rotate", {"server": ROTATING})
    api.control("rotate", {"server": ROTATING})  # two keys are published: old is gone
    time.sleep(MIN_REFETCH_S + 0.5)
    assert_allowed(api.get("/rotating", api.mint(server=ROTATING)))  # refetch: new set
    # The worker that refetched has the new set at once; the others adopt it on their next
    # tick (50 ms).
    time.sleep(0.2)
    assert_invalid_token(api.get("/rotating", old), old)


def test_known_keys_are_served_while_a_refetch_hangs(api, rotating, unique):
    known = api.mint(server=ROTATING)
    assert_allowed(api.get("/rotating", known))
    time.sleep(MIN_REFETCH_S + 0.5)
    api.control("fault", {"server": ROTATING, "mode": "slow", "delay_ms": 8000})
    unknown = api.mint(server=ROTATING, header={"kid": f"not-yet-{unique}"})
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        waiting = pool.submit(api.get, "/rotating", unknown)
        time.sleep(0.5)  # the refetch is in flight now
        quick_start = time.monotonic()
        assert_allowed(api.get("/rotating", known))
        assert time.monotonic() - quick_start < 1.5, "a known kid waited for the refetch"
        assert_invalid_token(waiting.result(timeout=15), unknown)
        # It waited for the fetch, but at most timeout_ms (3 s), not the IdP's 8 s.
        assert time.monotonic() - started < 6.5


@pytest.mark.parametrize("mode", ["500", "malformed", "empty"])
def test_failed_refetch_keeps_the_last_good_keys(api, rotating, unique, mode):
    known = api.mint(server=ROTATING)
    assert_allowed(api.get("/rotating", known))
    time.sleep(MIN_REFETCH_S + 0.5)
    api.control("fault", {"server": ROTATING, "mode": mode})
    unknown = api.mint(server=ROTATING, header={"kid": f"missing-{unique}"})
    assert_invalid_token(api.get("/rotating", unknown), unknown)  # triggers a failed fetch
    assert_allowed(api.get("/rotating", known))


def test_provider_without_keys_is_503(api):
    reply = api.get("/broken", api.mint(server="broken"))  # its JWKS URI answers 404
    assert_denied(reply, 503)
    retry_after = reply.header("retry-after")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) > 0, reply


def test_provider_without_keys_still_says_401_without_a_token(api):
    assert_denied(api.get("/broken"), 401, challenge='Bearer realm="api"')
