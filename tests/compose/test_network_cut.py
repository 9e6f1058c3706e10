"""The network between Envoy and the IdP cut (`network disconnect` of the IdP's container),
then restored (`network connect`, with its service name as alias), Envoy running throughout."""

from __future__ import annotations

import pytest

from conftest import wait_envoy_reaches, wait_until

pytestmark = pytest.mark.host

SERVER = "netcut"


def test_network_cut_then_reconnected(stack, engine):
    envoy_started = engine.started_at("envoy")
    assert stack.get("/netcut", stack.mint(SERVER)).status_code == 200
    # Minted before the cut (the IdP is unreachable during it), each first sent after it.
    on_cached = stack.mint(SERVER, claims={"sub": "netcut-cached"})
    new_kid = stack.rotate(SERVER)[0]  # published from now on, unknown to Envoy
    on_new = stack.mint(SERVER)
    failures = stack.stat("okta_jwt_jwks_fetch_failure_netcut")

    engine.disconnect("mock-idp")
    try:
        # Keys Envoy already has keep verifying.
        r = stack.get("/netcut", on_cached)
        assert r.status_code == 200, r.text
        # The new key cannot be fetched: its token is refused, after the filter tried.
        r = stack.get("/netcut", on_new)
        assert r.status_code == 401, r.text
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        wait_until("the failed refetch to be counted",
                   lambda: stack.stat("okta_jwt_jwks_fetch_failure_netcut") > failures)
    finally:
        engine.connect("mock-idp")

    wait_envoy_reaches(stack, engine, "mock-idp", "okta_idp")
    # Reconnected: the next refetch (min_refetch_interval_s is 1) brings the new key.
    wait_until("the new key's token to pass after the reconnection",
               lambda: stack.get("/netcut", on_new).status_code == 200, timeout_s=30,
               interval_s=1)
    assert new_kid in stack.kids(SERVER)
    assert stack.get("/netcut", on_cached).status_code == 200
    assert engine.started_at("envoy") == envoy_started, "Envoy was restarted"
