"""Per-rule policy: scopes, claims, template parameters, auth modes, rule matching and rate
limits (rules in envoy/filter.json.tmpl)."""

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from client import (assert_allowed, assert_claim_denied, assert_denied,
                    assert_insufficient_scope, assert_invalid_token, assert_no_token)

ORDERS = "/api/orders"
WRITER = {"scp": ["orders:read", "orders:write"], "groups": ["Admins"]}


# -- scopes ------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_write_without_write_scope_is_insufficient_scope(api, method):
    token = api.mint({"scp": ["orders:read"], "groups": ["Admins"]})
    assert_insufficient_scope(api.request(method, ORDERS, token), "orders:write")


def test_read_without_read_scope_is_insufficient_scope(api):
    token = api.mint({"scp": ["orders:write"]})
    assert_insufficient_scope(api.get(ORDERS, token), "orders:read")


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_write_with_scope_and_group_is_allowed(api, method):
    echo = assert_allowed(api.request(method, ORDERS, api.mint(WRITER), body=b"{}"))
    assert echo["method"] == method


@pytest.mark.parametrize("claims", [
    pytest.param({"scp": "orders:read profile"}, id="scp as a space-delimited string"),
    pytest.param({"scp": None, "scope": "profile orders:read"}, id="RFC 9068 scope"),
    pytest.param({"scp": ["profile"], "scope": "orders:read"}, id="union of scp and scope"),
])
def test_scopes_from_scp_and_scope(api, claims):
    assert_allowed(api.get(ORDERS, api.mint(claims)))


def test_scope_matching_is_exact(api):
    token = api.mint({"scp": ["orders:reader", "ORDERS:READ", "orders"]})
    assert_insufficient_scope(api.get(ORDERS, token), "orders:read")


# /api/reports: scopes any of [admin, orders:write] and org.tier in [gold, platinum].

@pytest.mark.parametrize("scp", [["admin"], ["orders:write"]])
def test_any_of_the_scopes_is_enough(api, scp):
    assert_allowed(api.get("/api/reports", api.mint({"scp": scp, "org": {"tier": "gold"}})))


def test_none_of_the_any_scopes_is_insufficient_scope(api):
    reply = api.get("/api/reports", api.mint({"scp": ["orders:read"], "org": {"tier": "gold"}}))
    assert_denied(reply, 403, error="insufficient_scope", challenge=re.compile(
        r'Bearer realm="api", error="insufficient_scope", scope="[^"]+"'))
    scope = re.search(r'scope="([^"]+)"', reply.header("www-authenticate")).group(1)
    assert set(scope.split(" ")) == {"admin", "orders:write"}


# -- claims ------------------------------------------------------------------------------

@pytest.mark.parametrize("groups", [["Admins"], ["Users", "Admins"], "Users Admins", "Admins"])
def test_groups_contains_admins_is_allowed(api, groups):
    token = api.mint({**WRITER, "groups": groups})
    assert_allowed(api.request("POST", ORDERS, token, body=b"{}"))


@pytest.mark.parametrize("groups", [None, [], ["Users"], ["admins"], "Administrators",
                                    ["Admins Users"], {"Admins": True}])
def test_groups_without_admins_is_forbidden(api, groups):
    token = api.mint({**WRITER, "groups": groups})
    assert_claim_denied(api.request("POST", ORDERS, token, body=b"{}"))


@pytest.mark.parametrize("org", [{"tier": "gold"}, {"tier": "platinum", "id": 7}])
def test_dotted_claim_in_list_is_allowed(api, org):
    assert_allowed(api.get("/api/reports", api.mint({"scp": ["admin"], "org": org})))


@pytest.mark.parametrize("org", [None, {"tier": "silver"}, {"tier": "Gold"}, "gold",
                                 {"level": {"tier": "gold"}}])
def test_dotted_claim_not_in_list_is_forbidden(api, org):
    assert_claim_denied(api.get("/api/reports", api.mint({"scp": ["admin"], "org": org})))


def test_equals_param_matches_the_path_segment(api):
    token = api.mint({"uid": "00u-demo-user"})
    assert_allowed(api.get("/users/00u-demo-user/profile", token))
    assert_claim_denied(api.get("/users/00u-someone-else/profile", token))


def test_equals_param_without_the_claim_is_forbidden(api):
    assert_claim_denied(api.get("/users/00u-demo-user/profile", api.mint({"uid": None})))


def test_claim_check_needs_a_valid_token_first(api):
    assert_no_token(api.get("/users/00u-demo-user/profile"))
    token = api.mint({"uid": "00u-demo-user"}, signing_key="rogue")
    assert_invalid_token(api.get("/users/00u-demo-user/profile", token), token)


# -- auth modes and matching -------------------------------------------------------------

def test_auth_none_ignores_tokens(api):
    assert_allowed(api.get("/healthz"))
    assert_allowed(api.get("/healthz", "garbage.not.atoken"))
    assert_allowed(api.get("/healthz/deep", api.mint(signing_key="rogue")))


def test_auth_optional_without_token_is_allowed(api):
    echo = assert_allowed(api.get("/public"))
    assert "x-jwt-sub" not in echo["headers"]


def test_auth_optional_with_valid_token_runs_the_claim_headers(api, unique):
    echo = assert_allowed(api.get("/public/page", api.mint({"sub": f"user-{unique}"})))
    assert echo["headers"]["x-jwt-sub"] == f"user-{unique}"


@pytest.mark.parametrize("token", [
    pytest.param(lambda api: "garbage", id="malformed"),
    pytest.param(lambda api: api.mint({"exp": 1_000_000_000, "iat": 999_999_000}), id="expired"),
    pytest.param(lambda api: api.mint(signing_key="rogue"), id="bad signature"),
])
def test_auth_optional_with_invalid_token_is_401(api, token):
    bad = token(api)
    assert_invalid_token(api.get("/public", bad), bad)


@pytest.mark.parametrize("path", ["/public", "/public/", "/public/a/b"])
def test_prefix_matches_whole_segments(api, path):
    assert_allowed(api.get(path))


@pytest.mark.parametrize("path", ["/publicity", "/public-x", "/healthzz"])
def test_prefix_does_not_match_inside_a_segment(api, path):
    assert_no_token(api.get(path))


def test_method_outside_the_rules_falls_through_to_token_only(api):
    # DELETE /api/orders matches neither /api/orders rule: only a valid token is needed.
    assert_no_token(api.request("DELETE", ORDERS))
    assert_allowed(api.request("DELETE", ORDERS, api.mint({"scp": []})))


# -- rate limits (/limited: 3 per sub per hour, burst 3) ---------------------------------

def test_rate_limit_admits_the_burst_then_429(api, unique):
    token = api.mint({"sub": f"rl-{unique}"})
    for _ in range(3):
        assert_allowed(api.get("/limited", token))
    reply = api.get("/limited", token)
    assert_denied(reply, 429)
    retry_after = reply.header("retry-after")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) > 0, reply
    assert reply.header("ratelimit-limit") == "3", reply
    assert reply.header("ratelimit-remaining") == "0", reply
    reset = reply.header("ratelimit-reset")
    assert reset is not None and reset.isdigit() and int(reset) > 0, reply
    # Another subject has its own bucket.
    assert_allowed(api.get("/limited", api.mint({"sub": f"rl-other-{unique}"})))


def test_rate_limit_is_exact_across_workers(api, unique):
    token = api.mint({"sub": f"rl-burst-{unique}"})
    with ThreadPoolExecutor(max_workers=12) as pool:  # fresh connections: both workers
        statuses = sorted(r.status for r in pool.map(lambda _: api.get("/limited", token),
                                                     range(12)))
    assert statuses == [200] * 3 + [429] * 9
