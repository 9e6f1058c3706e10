"""Per-rule policy: scopes, claims, template parameters, auth modes, rule matching and rate
limits (rules in envoy/filter.json.tmpl)."""

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from assertions import (assert_allowed, assert_claim_denied, assert_denied,
                    assert_insufficient_scope, assert_invalid_token, assert_no_token)

ORDERS = "/api/orders"
WRITER = {"scp": ["orders:read", "orders:write"], "groups": ["Admins"]}


# -- scopes ------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_write_without_write_scope_is_insufficient_scope(envoy, idp, method):
    token = idp.mint({"scp": ["orders:read"], "groups": ["Admins"]})
    assert_insufficient_scope(envoy.request(method, ORDERS, token), "orders:write")


def test_read_without_read_scope_is_insufficient_scope(envoy, idp):
    token = idp.mint({"scp": ["orders:write"]})
    assert_insufficient_scope(envoy.get(ORDERS, token), "orders:read")


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_write_with_scope_and_group_is_allowed(envoy, idp, method):
    echo = assert_allowed(envoy.request(method, ORDERS, idp.mint(WRITER), body=b"{}"))
    assert echo["method"] == method


@pytest.mark.parametrize("claims", [
    pytest.param({"scp": "orders:read profile"}, id="scp as a space-delimited string"),
    pytest.param({"scp": None, "scope": "profile orders:read"}, id="RFC 9068 scope"),
    pytest.param({"scp": ["profile"], "scope": "orders:read"}, id="union of scp and scope"),
])
def test_scopes_from_scp_and_scope(envoy, idp, claims):
    assert_allowed(envoy.get(ORDERS, idp.mint(claims)))


def test_scope_matching_is_exact(envoy, idp):
    token = idp.mint({"scp": ["orders:reader", "ORDERS:READ", "orders"]})
    assert_insufficient_scope(envoy.get(ORDERS, token), "orders:read")


# /api/reports: scopes any of [admin, orders:write] and org.tier in [gold, platinum].

@pytest.mark.parametrize("scp", [["admin"], ["orders:write"]])
def test_any_of_the_scopes_is_enough(envoy, idp, scp):
    assert_allowed(envoy.get("/api/reports", idp.mint({"scp": scp, "org": {"tier": "gold"}})))


def test_none_of_the_any_scopes_is_insufficient_scope(envoy, idp):
    reply = envoy.get("/api/reports", idp.mint({"scp": ["orders:read"], "org": {"tier": "gold"}}))
    assert_denied(reply, 403, error="insufficient_scope", challenge=re.compile(
        r'Bearer realm="api", error="insufficient_scope", scope="[^"]+"'))
    scope = re.search(r'scope="([^"]+)"', reply.header("www-authenticate")).group(1)
    assert set(scope.split(" ")) == {"admin", "orders:write"}


# -- claims ------------------------------------------------------------------------------

@pytest.mark.parametrize("groups", [["Admins"], ["Users", "Admins"], "Users Admins", "Admins"])
def test_groups_contains_admins_is_allowed(envoy, idp, groups):
    token = idp.mint({**WRITER, "groups": groups})
    assert_allowed(envoy.request("POST", ORDERS, token, body=b"{}"))


@pytest.mark.parametrize("groups", [None, [], ["Users"], ["admins"], "Administrators",
                                    ["Admins Users"], {"Admins": True}])
def test_groups_without_admins_is_forbidden(envoy, idp, groups):
    token = idp.mint({**WRITER, "groups": groups})
    assert_claim_denied(envoy.request("POST", ORDERS, token, body=b"{}"))


@pytest.mark.parametrize("org", [{"tier": "gold"}, {"tier": "platinum", "id": 7}])
def test_dotted_claim_in_list_is_allowed(envoy, idp, org):
    assert_allowed(envoy.get("/api/reports", idp.mint({"scp": ["admin"], "org": org})))


@pytest.mark.parametrize("org", [None, {"tier": "silver"}, {"tier": "Gold"}, "gold",
                                 {"level": {"tier": "gold"}}])
def test_dotted_claim_not_in_list_is_forbidden(envoy, idp, org):
    assert_claim_denied(envoy.get("/api/reports", idp.mint({"scp": ["admin"], "org": org})))


def test_equals_param_matches_the_path_segment(envoy, idp):
    token = idp.mint({"uid": "00u-demo-user"})
    assert_allowed(envoy.get("/users/00u-demo-user/profile", token))
    assert_claim_denied(envoy.get("/users/00u-someone-else/profile", token))


def test_equals_param_without_the_claim_is_forbidden(envoy, idp):
    assert_claim_denied(envoy.get("/users/00u-demo-user/profile", idp.mint({"uid": None})))


def test_claim_check_needs_a_valid_token_first(envoy, idp):
    assert_no_token(envoy.get("/users/00u-demo-user/profile"))
    token = idp.mint({"uid": "00u-demo-user"}, signing_key="rogue")
    assert_invalid_token(envoy.get("/users/00u-demo-user/profile", token), token)


# -- auth modes and matching -------------------------------------------------------------

def test_auth_none_ignores_tokens(envoy, idp):
    assert_allowed(envoy.get("/healthz"))
    assert_allowed(envoy.get("/healthz", "garbage.not.atoken"))
    assert_allowed(envoy.get("/healthz/deep", idp.mint(signing_key="rogue")))


def test_auth_optional_without_token_is_allowed(envoy):
    echo = assert_allowed(envoy.get("/public"))
    assert "x-jwt-sub" not in echo["headers"]


def test_auth_optional_with_valid_token_runs_the_claim_headers(envoy, idp, unique):
    echo = assert_allowed(envoy.get("/public/page", idp.mint({"sub": f"user-{unique}"})))
    assert echo["headers"]["x-jwt-sub"] == f"user-{unique}"


@pytest.mark.parametrize("token", [
    pytest.param(lambda idp: "garbage", id="malformed"),
    pytest.param(lambda idp: idp.mint({"exp": 1_000_000_000, "iat": 999_999_000}), id="expired"),
    pytest.param(lambda idp: idp.mint(signing_key="rogue"), id="bad signature"),
])
def test_auth_optional_with_invalid_token_is_401(envoy, idp, token):
    bad = token(idp)
    assert_invalid_token(envoy.get("/public", bad), bad)


@pytest.mark.parametrize("path", ["/public", "/public/", "/public/a/b"])
def test_prefix_matches_whole_segments(envoy, path):
    assert_allowed(envoy.get(path))


@pytest.mark.parametrize("path", ["/publicity", "/public-x", "/healthzz"])
def test_prefix_does_not_match_inside_a_segment(envoy, path):
    assert_no_token(envoy.get(path))


def test_method_outside_the_rules_falls_through_to_token_only(envoy, idp):
    # DELETE /api/orders matches neither /api/orders rule: only a valid token is needed.
    assert_no_token(envoy.request("DELETE", ORDERS))
    assert_allowed(envoy.request("DELETE", ORDERS, idp.mint({"scp": []})))


# -- rate limits (/limited: 3 per sub per hour, burst 3) ---------------------------------

def test_rate_limit_admits_the_burst_then_429(envoy, idp, unique):
    token = idp.mint({"sub": f"rl-{unique}"})
    for _ in range(3):
        assert_allowed(envoy.get("/limited", token))
    reply = envoy.get("/limited", token)
    assert_denied(reply, 429)
    retry_after = reply.header("retry-after")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) > 0, reply
    assert reply.header("ratelimit-limit") == "3", reply
    assert reply.header("ratelimit-remaining") == "0", reply
    reset = reply.header("ratelimit-reset")
    assert reset is not None and reset.isdigit() and int(reset) > 0, reply
    # Another subject has its own bucket.
    assert_allowed(envoy.get("/limited", idp.mint({"sub": f"rl-other-{unique}"})))


def test_rate_limit_is_exact_across_workers(envoy, idp, unique):
    token = idp.mint({"sub": f"rl-burst-{unique}"})
    with ThreadPoolExecutor(max_workers=12) as pool:  # fresh connections: both workers
        statuses = sorted(r.status for r in pool.map(lambda _: envoy.get("/limited", token),
                                                     range(12)))
    assert statuses == [200] * 3 + [429] * 9
