"""Token sources: provider "browser" reads the cookie `access_token`, then the query
parameter `access_token` (rules /cookie and /query); provider "okta" reads only the
Authorization header. A token taken from a source is removed before the upstream."""

import re
import urllib.parse

from assertions import assert_allowed, assert_denied, assert_invalid_token, assert_no_token

INVALID_REQUEST = re.compile(
    r'Bearer realm="api", error="invalid_request", error_description="[^"]+"')


def _cookies(header: str | None) -> dict[str, str]:
    pairs = (c.strip().partition("=") for c in (header or "").split(";") if c.strip())
    return {name: value for name, _, value in pairs}


def _split(path: str) -> tuple[str, list[tuple[str, str]]]:
    base, _, query = path.partition("?")
    return base, urllib.parse.parse_qsl(query, keep_blank_values=True)


def test_query_token_is_used_and_removed(envoy, idp):
    token = idp.mint()
    echo = assert_allowed(envoy.get(f"/query/items?a=1&access_token={token}&b=x%20y"))
    base, params = _split(echo["path"])
    assert token not in echo["path"]
    assert base == "/query/items" and params == [("a", "1"), ("b", "x y")]
    assert echo["headers"]["x-jwt-sub"] == "alice@example.com"


def test_query_token_alone_leaves_no_parameter(envoy, idp):
    token = idp.mint()
    echo = assert_allowed(envoy.get(f"/query?access_token={token}"))
    assert _split(echo["path"]) == ("/query", [])


def test_cookie_token_is_used_and_removed(envoy, idp):
    token = idp.mint()
    echo = assert_allowed(envoy.get("/cookie", headers={
        "cookie": f"theme=dark; access_token={token}; lang=en"}))
    assert token not in str(echo["headers"])
    assert _cookies(echo["headers"].get("cookie")) == {"theme": "dark", "lang": "en"}


def test_cookie_token_alone_leaves_no_cookie(envoy, idp):
    token = idp.mint()
    echo = assert_allowed(envoy.get("/cookie", headers={"cookie": f"access_token={token}"}))
    assert _cookies(echo["headers"].get("cookie")) == {}


def test_tokens_in_two_sources_are_an_invalid_request(envoy, idp):
    # SPEC "Access tokens only": a token in the cookie and one in the query is ambiguous (a
    # proxy and an upstream could each pick another), so neither is used, whichever is valid.
    good, bad = idp.mint(), idp.mint(signing_key="rogue")
    for query, cookie in ((bad, good), (good, bad), (good, good)):
        reply = envoy.get(f"/query?access_token={query}", headers={"cookie": f"access_token={cookie}"})
        assert_denied(reply, 400, challenge=INVALID_REQUEST)


def test_invalid_query_token_is_401(envoy, idp):
    token = idp.mint(signing_key="rogue")
    assert_invalid_token(envoy.get(f"/query?access_token={token}"), token)


def test_sources_belong_to_their_provider(envoy, idp):
    token = idp.mint()
    # "browser" does not read the Authorization header ...
    assert_no_token(envoy.get("/cookie", token))
    # ... and "okta" (the only provider of /api/orders) reads nothing else.
    assert_no_token(envoy.get(f"/api/orders?access_token={token}"))
    assert_no_token(envoy.get("/api/orders", headers={"cookie": f"access_token={token}"}))
