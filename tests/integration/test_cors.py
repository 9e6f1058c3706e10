"""CORS preflights pass unchecked (bypass_cors_preflight: true); nothing else does."""

import pytest

from assertions import assert_allowed, assert_no_token

PREFLIGHT = {"origin": "https://app.example.com", "access-control-request-method": "POST",
             "access-control-request-headers": "authorization, content-type"}


def test_preflight_reaches_the_upstream_unchecked(envoy):
    echo = assert_allowed(envoy.request("OPTIONS", "/api/orders", headers=PREFLIGHT))
    assert echo["method"] == "OPTIONS"
    assert echo["headers"]["origin"] == PREFLIGHT["origin"]


def test_preflight_still_strips_claim_headers(envoy):
    headers = {**PREFLIGHT, "x-jwt-sub": "spoofed", "x-jwt-payload": "spoofed"}
    echo = assert_allowed(envoy.request("OPTIONS", "/api/orders", headers=headers))
    assert "x-jwt-sub" not in echo["headers"] and "x-jwt-payload" not in echo["headers"]


@pytest.mark.parametrize("method, headers", [
    pytest.param("OPTIONS", {"origin": PREFLIGHT["origin"]}, id="OPTIONS without ACRM"),
    pytest.param("OPTIONS", {"access-control-request-method": "POST"}, id="OPTIONS without Origin"),
    pytest.param("OPTIONS", {}, id="bare OPTIONS"),
    pytest.param("GET", PREFLIGHT, id="GET with preflight headers"),
    pytest.param("POST", PREFLIGHT, id="POST with preflight headers"),
])
def test_non_preflights_need_a_token(envoy, method, headers):
    assert_no_token(envoy.request(method, "/api/orders", headers=headers))
