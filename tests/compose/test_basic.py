"""The basic answers of the filter in the compose stack: 200, 401, 403 and 503, each with
the shape the contract gives it. Runs from the compose `tests` service (inside the network,
by service name) as the job of `docker compose up --exit-code-from tests`."""

from __future__ import annotations

import json
import re

from conftest import REALM, denial

INVALID_TOKEN = re.compile(rf'^Bearer realm="{REALM}", error="invalid_token", error_description="[^"]+"$')


def test_route_without_auth_needs_no_token(stack):
    r = stack.get("/healthz")
    assert r.status_code == 200, r.text


def test_valid_token_reaches_the_upstream_with_claims_and_without_the_token(stack):
    token = stack.mint("default", claims={"sub": "compose-basic", "scp": ["orders:read"]})
    r = stack.get("/api/orders/7", token)
    assert r.status_code == 200, r.text
    echoed = r.json()  # the echo upstream's view of the request
    assert echoed["path"] == "/api/orders/7"
    assert echoed["headers"]["x-jwt-sub"] == "compose-basic"
    assert echoed["headers"]["x-jwt-scopes"] == "orders:read"
    assert "authorization" not in echoed["headers"]  # forward_token is false


def test_no_token_is_401_with_a_bare_challenge(stack):
    r = stack.get("/api/orders/7")
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == f'Bearer realm="{REALM}"'
    denial(r)


def test_token_signed_by_an_unpublished_key_is_401_invalid_token(stack):
    token = stack.mint("default", signing_key="rogue")
    r = stack.get("/api/orders/7", token)
    assert r.status_code == 401, r.text
    assert INVALID_TOKEN.match(r.headers["www-authenticate"]), r.headers["www-authenticate"]
    assert denial(r)["error"] == "invalid_token"


def test_expired_token_is_401_invalid_token(stack):
    token = stack.mint("default", lifetime_s=-600)
    r = stack.get("/api/orders/7", token)
    assert r.status_code == 401, r.text
    assert INVALID_TOKEN.match(r.headers["www-authenticate"])


def test_missing_scope_is_403_insufficient_scope(stack):
    token = stack.mint("default", claims={"scp": ["profile"]})
    r = stack.get("/api/orders/7", token)
    assert r.status_code == 403, r.text
    assert r.headers["www-authenticate"] == \
        f'Bearer realm="{REALM}", error="insufficient_scope", scope="orders:read"'
    assert denial(r)["error"] == "insufficient_scope"


def test_unmet_claim_is_403_without_a_challenge(stack):
    # POST /api/orders needs orders:write and groups containing Admins.
    token = stack.mint("default", claims={"scp": ["orders:write"], "groups": ["Users"]})
    r = stack.get("/api/orders", token, method="POST")
    assert r.status_code == 403, r.text
    assert "www-authenticate" not in r.headers
    denial(r)


def test_provider_that_never_had_keys_is_503_with_retry_after(stack):
    # The standby provider's IdP (compose profile "standby") is not running: its keys could
    # never be fetched. The token itself is fine: mock-idp mints it for the same issuer.
    token = stack.mint("standby")
    r = stack.get("/standby/x", token)
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"].isdigit() and int(r.headers["retry-after"]) >= 1
    assert "www-authenticate" not in r.headers
    denial(r)
    assert json.dumps(r.json()).find(token) < 0  # the answer never carries the token
