"""What the upstream sees: claim headers, the payload header, the token removed, and
client-sent claim headers stripped whatever the rule."""

import json

import pytest

from assertions import assert_allowed
from idp_client import b64url_decode, token_claims

ORDERS = "/api/orders"
# Every header any provider writes (envoy/filter.json.tmpl).
CLAIM_HEADERS = ["x-jwt-sub", "x-jwt-scopes", "x-jwt-cid", "x-jwt-uid", "x-jwt-ver",
                 "x-jwt-org", "x-jwt-payload"]


def test_claims_are_written_to_their_headers(envoy, idp, unique):
    token = idp.mint({"sub": f"user-{unique}", "scp": ["orders:read", "profile"],
                      "uid": f"00u-{unique}", "org": {"tier": "gold", "id": 7}})
    headers = assert_allowed(envoy.get(ORDERS, token))["headers"]
    assert headers["x-jwt-sub"] == f"user-{unique}"
    assert headers["x-jwt-scopes"] == "orders:read profile"  # arrays: joined by one space
    assert headers["x-jwt-cid"] == "0oa-demo-client"
    assert headers["x-jwt-uid"] == f"00u-{unique}"
    assert headers["x-jwt-ver"] == "1"  # numbers as JSON
    assert " " not in headers["x-jwt-org"]  # objects as compact JSON
    assert json.loads(headers["x-jwt-org"]) == {"tier": "gold", "id": 7}


@pytest.mark.parametrize("value, header", [
    ("plain", "plain"),
    (True, "true"),
    (False, "false"),
    (42, "42"),
    (2.5, "2.5"),
    (["a", "b", "c"], "a b c"),
    ("space separated", "space separated"),
])
def test_claim_values_are_rendered_by_type(envoy, idp, value, header):
    headers = assert_allowed(envoy.get(ORDERS, idp.mint({"uid": value})))["headers"]
    assert headers["x-jwt-uid"] == header


def test_missing_claim_writes_no_header(envoy, idp):
    headers = assert_allowed(envoy.get(ORDERS, idp.mint({"uid": None})))["headers"]
    assert "x-jwt-uid" not in headers
    assert headers["x-jwt-sub"] == "alice@example.com"  # the others still are


@pytest.mark.parametrize("value", ["a\r\nx-injected: 1", "a\nx-injected: 1", "a\rb", "a\x00b"])
def test_claim_with_cr_lf_or_nul_is_not_written(envoy, idp, value):
    headers = assert_allowed(envoy.get(ORDERS, idp.mint({"sub": value})))["headers"]
    assert "x-jwt-sub" not in headers
    assert "x-injected" not in headers
    assert headers["x-jwt-cid"] == "0oa-demo-client"


def test_payload_header_is_the_verified_payload(envoy, idp, unique):
    token = idp.mint({"sub": f"user-{unique}", "org": {"tier": "gold"}})
    payload = assert_allowed(envoy.get(ORDERS, token))["headers"]["x-jwt-payload"]
    assert "=" not in payload and "+" not in payload and "/" not in payload  # base64url, no pad
    assert json.loads(b64url_decode(payload)) == token_claims(token)


def test_token_is_removed_before_the_upstream(envoy, idp):
    headers = assert_allowed(envoy.get(ORDERS, idp.mint()))["headers"]
    assert "authorization" not in headers


def test_token_is_forwarded_when_the_provider_says_so(envoy, idp):
    token = idp.mint(server="strict")  # provider "strict" has forward_token: true
    headers = assert_allowed(envoy.get("/strict", token))["headers"]
    assert headers["authorization"] == f"Bearer {token}"


def _spoofed(name_case=str.lower):
    return [(name_case(h), "spoofed") for h in CLAIM_HEADERS]


@pytest.mark.parametrize("path", ["/healthz", "/public"])
def test_spoofed_claim_headers_are_stripped_without_a_token(envoy, path):
    headers = assert_allowed(envoy.get(path, headers=_spoofed()))["headers"]
    assert not set(CLAIM_HEADERS) & headers.keys(), headers


def test_spoofed_claim_headers_are_stripped_whatever_their_case(envoy):
    headers = assert_allowed(envoy.get("/healthz", headers=_spoofed(str.upper)))["headers"]
    assert not set(CLAIM_HEADERS) & headers.keys(), headers


def test_spoofed_claim_headers_are_replaced_with_a_token(envoy, idp):
    # uid is absent from the token, so its spoofed header must simply disappear.
    token = idp.mint({"uid": None})
    spoofed = _spoofed() + [("x-jwt-sub", "spoofed-again")]
    headers = assert_allowed(envoy.get(ORDERS, token, headers=spoofed))["headers"]
    assert headers["x-jwt-sub"] == "alice@example.com"
    assert headers["x-jwt-cid"] == "0oa-demo-client"
    assert "x-jwt-uid" not in headers
    assert json.loads(b64url_decode(headers["x-jwt-payload"])) == token_claims(token)

