"""The IdP's container stopped, then started again, with Envoy running throughout.

Providers (docker/compose-filter.json): `outage` on mock-idp; `standby` on the idp-standby
service, which `up` leaves out, so that provider has never had keys until the second test
starts it. The two tests run in this order (the second ends the first one's premise)."""

from __future__ import annotations

import pytest

from conftest import denial, wait_envoy_reaches, wait_until

pytestmark = pytest.mark.host


def test_idp_stopped_cached_keys_serve_and_a_provider_without_keys_is_503(stack, engine):
    # Tokens minted while the IdP is up; each is sent for the first time after the stop, so
    # the filter must verify it with the keys it cached (not from its cache of tokens).
    fresh = [stack.mint("outage", claims={"sub": f"outage-{i}"}) for i in range(3)]
    assert stack.get("/outage", stack.mint("outage")).status_code == 200
    standby = stack.mint("standby")
    assert stack.get("/standby", standby).status_code == 503
    failures_before = stack.stat("okta_jwt_jwks_fetch_failure_standby")

    engine.stop("mock-idp")
    try:
        assert not stack.idp_answers(), "the IdP still answers after its container stopped"
        for token in fresh:
            r = stack.get("/outage", token)
            assert r.status_code == 200, r.text
        r = stack.get("/standby", standby)
        assert r.status_code == 503, r.text
        assert int(r.headers["retry-after"]) >= 1
        assert "www-authenticate" not in r.headers
        denial(r)
        # The filter keeps trying the provider that never had keys, and failing.
        wait_until("a failed fetch for the standby provider",
                   lambda: stack.stat("okta_jwt_jwks_fetch_failure_standby") > failures_before,
                   timeout_s=90)
    finally:
        engine.start("mock-idp")
        wait_until("the IdP to answer again", stack.idp_answers)


def test_idp_started_again_the_filter_recovers_without_an_envoy_restart(stack, engine):
    envoy_started = engine.started_at("envoy")
    old = stack.mint("outage")
    assert stack.get("/outage", old).status_code == 200
    # Names a kid the IdP never published: while the IdP is down, its refetch fails.
    unknown_kid = stack.mint("outage", header={"kid": "0123456789abcdef"})

    engine.stop("mock-idp")
    try:
        failures = stack.stat("okta_jwt_jwks_fetch_failure_outage")
        r = stack.get("/outage", unknown_kid)
        assert r.status_code == 401, r.text
        wait_until("the failed refetch to be counted",
                   lambda: stack.stat("okta_jwt_jwks_fetch_failure_outage") > failures)
    finally:
        engine.start("mock-idp")
    wait_until("the IdP to answer again", stack.idp_answers)
    wait_envoy_reaches(stack, engine, "mock-idp", "okta_idp")

    # The same Envoy fetches again: a key the IdP adds now is picked up on its first token.
    new_kid = stack.rotate("outage")[0]
    new = stack.mint("outage")
    successes = stack.stat("okta_jwt_jwks_fetch_success_outage")
    r = stack.get("/outage", new)
    assert r.status_code == 200, r.text
    assert new_kid in stack.kids("outage")
    assert stack.stat("okta_jwt_jwks_fetch_success_outage") > successes
    assert stack.get("/outage", old).status_code == 200

    # The provider that never had keys gets its first set once its IdP is there, within the
    # retry back-off (capped at its cache_duration_s, 30 s, plus jitter).
    standby = stack.mint("standby")
    assert stack.get("/standby", standby).status_code == 503
    engine.up("idp-standby")
    try:
        wait_until("the standby provider to pass its first token",
                   lambda: stack.get("/standby", standby).status_code == 200, timeout_s=90,
                   interval_s=1)
    finally:
        engine.stop("idp-standby")
    assert engine.started_at("envoy") == envoy_started, "Envoy was restarted"
