"""Token validation: presence, shape, time claims, issuer, audience, client and lifetime."""

import json
import re
import time

import pytest

from assertions import assert_allowed, assert_denied, assert_invalid_token, assert_no_token
from idp_client import b64url

READ = "/api/orders"  # GET needs orders:read, which minted tokens carry by default


def now() -> int:
    return int(time.time())


def test_minted_token_is_allowed(envoy, idp):
    echo = assert_allowed(envoy.get(READ, idp.mint()))
    assert echo["method"] == "GET" and echo["path"] == READ


def test_token_from_the_token_endpoint_is_allowed(envoy, idp):
    r = idp.token_endpoint(auth=("0oa-demo-client", "demo-secret"),
                           data={"grant_type": "client_credentials", "scope": "orders:read"})
    assert r.status_code == 200, r.text
    assert_allowed(envoy.get(READ, r.json()["access_token"]))


def test_missing_token_is_401_with_bare_challenge(envoy):
    assert_no_token(envoy.get(READ))


def test_path_matching_no_rule_requires_a_token(envoy, idp):
    assert_no_token(envoy.get("/matches/no/rule"))
    assert_allowed(envoy.get("/matches/no/rule", idp.mint()))


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
def test_bearer_prefix_is_case_insensitive(envoy, idp, scheme):
    assert_allowed(envoy.get(READ, headers={"authorization": f"{scheme} {idp.mint()}"}))


def test_other_authorization_schemes_are_not_tokens(envoy):
    # Whether a non-Bearer Authorization counts as "no token" or as a bad one is open;
    # either way it is a 401 from the filter.
    reply = envoy.get(READ, headers={"authorization": "Basic MG9hLWRlbW8tY2xpZW50OmRlbW8tc2VjcmV0"})
    assert_denied(reply, 401, challenge=re.compile(
        r'Bearer realm="api"(, error="invalid_token", error_description="[^"]+")?'))


def _reshape(token: str, how: str) -> str:
    h, p, s = token.split(".")
    return {
        "two segments": f"{h}.{p}",
        "four segments": f"{h}.{p}.{s}.{s}",
        "JWE shape": f"{h}.{p}.{s}.{s}.{s}",
        "padded": f"{h}=.{p}==.{s}",
        "not base64url": f"{h}.{p[:-4]}!!!!.{s}",
        "header not JSON": f"{b64url(b'not json')}.{p}.{s}",
        "payload not JSON": f"{h}.{b64url(b'[1,2')}.{s}",
        "payload not an object": f"{h}.{b64url(b'[1,2]')}.{s}",
        "JSON serialization": json.dumps({"protected": h, "payload": p, "signature": s}),
        "garbage": "not-a-jwt",
    }[how]


@pytest.mark.parametrize("how", ["two segments", "four segments", "JWE shape", "padded",
                                 "not base64url", "header not JSON", "payload not JSON",
                                 "payload not an object", "JSON serialization", "garbage"])
def test_malformed_token_is_invalid(envoy, idp, how):
    token = _reshape(idp.mint(), how)
    assert_invalid_token(envoy.get(READ, token), token)


# Time claims are built when the test runs (not at collection), relative to `t` = now.
@pytest.mark.parametrize("claims", [
    pytest.param(lambda t: {"exp": t - 3600, "iat": t - 7200}, id="expired"),
    pytest.param(lambda t: {"exp": t - 120}, id="expired beyond skew"),
    pytest.param(lambda t: {"exp": None}, id="no exp"),
    pytest.param(lambda t: {"exp": str(t + 600)}, id="exp a string"),
    pytest.param(lambda t: {"nbf": t + 600}, id="nbf in the future"),
    pytest.param(lambda t: {"nbf": "soon"}, id="nbf a string"),
    pytest.param(lambda t: {"iat": t + 600}, id="iat in the future"),
    pytest.param(lambda t: {"iat": "recently"}, id="iat a string"),
])
def test_bad_time_claims_are_invalid(envoy, idp, claims):
    token = idp.mint(claims(now()))
    assert_invalid_token(envoy.get(READ, token), token)


@pytest.mark.parametrize("claims", [
    pytest.param(lambda t: {"exp": t - 20}, id="expired within skew"),
    pytest.param(lambda t: {"nbf": t + 20}, id="nbf within skew"),
    pytest.param(lambda t: {"iat": t + 20}, id="iat within skew"),
    pytest.param(lambda t: {"nbf": None, "iat": None}, id="no nbf, no iat"),
])
def test_time_claims_within_skew_are_allowed(envoy, idp, claims):
    assert_allowed(envoy.get(READ, idp.mint(claims(now()))))


def _other_port(issuer: str) -> str:
    scheme, rest = issuer.split("://", 1)
    hostport, path = rest.split("/", 1)
    host, _, port = hostport.rpartition(":")
    if not host:  # no explicit port
        host, port = hostport, "80"
    return f"{scheme}://{host}:{int(port) + 1}/{path}"


@pytest.mark.parametrize("issuer", [
    pytest.param(lambda idp: idp.issuer() + "/", id="trailing slash"),
    pytest.param(lambda idp: _other_port(idp.issuer()), id="other port"),
    pytest.param(lambda idp: idp.issuer().upper(), id="other case"),
    pytest.param(lambda idp: idp.issuer("second"), id="other authorization server"),
    pytest.param(lambda idp: None, id="no iss"),
])
def test_wrong_issuer_is_invalid(envoy, idp, issuer):
    token = idp.mint({"iss": issuer(idp)})
    assert_invalid_token(envoy.get(READ, token), token)


@pytest.mark.parametrize("aud", ["api://other", ["api://other"], [], None, "API://DEFAULT"])
def test_wrong_audience_is_invalid(envoy, idp, aud):
    token = idp.mint({"aud": aud})
    assert_invalid_token(envoy.get(READ, token), token)


@pytest.mark.parametrize("aud", ["api://default", ["api://other", "api://default"]])
def test_audience_string_or_array_is_allowed(envoy, idp, aud):
    assert_allowed(envoy.get(READ, idp.mint({"aud": aud})))


# /strict: provider "strict" (its own authorization server), client_ids
# ["0oa-demo-client"], max_lifetime_s 3600.

def test_strict_area_accepts_its_issuer_only(envoy, idp):
    assert_allowed(envoy.get("/strict", idp.mint(server="strict")))
    token = idp.mint()  # the default server's issuer is not allowed there
    assert_invalid_token(envoy.get("/strict", token), token)


@pytest.mark.parametrize("claims", [
    pytest.param({"cid": None, "client_id": "0oa-demo-client"}, id="client_id"),
    pytest.param({"cid": None, "azp": "0oa-demo-client"}, id="azp"),
])
def test_client_id_may_come_from_client_id_or_azp(envoy, idp, claims):
    assert_allowed(envoy.get("/strict", idp.mint(claims, server="strict")))


@pytest.mark.parametrize("claims", [
    pytest.param({"cid": "0oa-other-client"}, id="other cid"),
    pytest.param({"cid": None}, id="no client id at all"),
    pytest.param({"cid": "0OA-DEMO-CLIENT"}, id="other case"),
])
def test_unlisted_client_is_invalid(envoy, idp, claims):
    token = idp.mint(claims, server="strict")
    assert_invalid_token(envoy.get("/strict", token), token)


def test_lifetime_at_the_limit_is_allowed(envoy, idp):
    iat = now() - 10
    assert_allowed(envoy.get("/strict", idp.mint({"iat": iat, "exp": iat + 3600}, server="strict")))


def test_lifetime_over_the_limit_is_invalid(envoy, idp):
    iat = now() - 10
    token = idp.mint({"iat": iat, "exp": iat + 3601}, server="strict")
    assert_invalid_token(envoy.get("/strict", token), token)
    token = idp.mint(server="strict", lifetime_s=7200)
    assert_invalid_token(envoy.get("/strict", token), token)
