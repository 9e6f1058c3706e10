"""Path parameters, two tokens in one request, and issuers that are not URLs (SPEC "Rules",
"Access tokens only", "Providers"), through real Envoy. Requests are sent byte for byte."""

from __future__ import annotations

import re
from typing import Iterator

import pytest

import harness
from assertions import assert_allowed, assert_denied, assert_invalid_token, assert_no_token
from envoy_client import EnvoyClient, counter
from filter_config import REALM, filter_config
from idp_client import IdpClient

INVALID_REQUEST = re.compile(
    rf'Bearer realm="{REALM}", error="invalid_request", error_description="[^"]+"')

# Paths that many upstreams serve as /api/orders (or /admin...) while a naive proxy matches
# them as something else: matrix parameters, `..;`, encoded `;`, overlong UTF-8.
CONFUSING = [
    "/api/orders;x",
    "/api;/orders",
    "/healthz/..;/api/orders",
    "/healthz;/../api/orders",
    "/api/orders;jsessionid=ABC",
    "/healthz/..%3B/api/orders",
    "/healthz/..%3b/api/orders",
    "/api%3Borders",
    "/healthz/%C0%AE%C0%AE/api/orders",
    "/healthz/%c0%ae%c0%ae/api/orders",
    "/healthz%C0%AFapi",
    "/healthz/%E0%80%AE%E0%80%AE/api/orders",
]


@pytest.mark.parametrize("path", CONFUSING)
def test_path_parameters_and_overlong_escapes_are_400_by_default(envoy, idp, path):
    before = counter(envoy.stats(), "okta_jwt_denied_bad_path")
    assert_denied(envoy.get(path), 400)
    # Even with a valid token: the path, not the token, is the problem.
    assert_denied(envoy.get(path, idp.mint()), 400)
    assert counter(envoy.stats(), "okta_jwt_denied_bad_path") == before + 2


def test_a_semicolon_in_the_query_is_not_a_path_parameter(envoy):
    assert_allowed(envoy.get("/healthz?a=1;b=2"))


@pytest.fixture(scope="module")
def strip(tmp_path_factory) -> Iterator[EnvoyClient]:
    config = filter_config(
        {"okta": {}},
        [{"match": {"prefix": "/healthz"}, "auth": "none"},
         {"match": {"prefix": "/admin"}, "scopes": {"all": ["admin"]}},
         {"match": {"prefix": "/"}, "auth": "none"}],
        path_parameters="strip")
    stack = harness.start_stack(tmp_path_factory.mktemp("strip"), filter_config=config)
    try:
        yield EnvoyClient(stack.envoy_url, stack.admin_url)
    finally:
        stack.stop()


@pytest.mark.local_only
@pytest.mark.parametrize("path,upstream", [
    ("/healthz;v=1", "/healthz"),
    ("/healthz;v=1/x;y=2", "/healthz/x"),
    ("/public/..;/healthz", "/healthz"),
])
def test_strip_removes_parameters_before_matching_and_upstream(strip, path, upstream):
    reply = strip.get(path)
    assert_allowed(reply)
    assert reply.json()["path"] == upstream


@pytest.mark.local_only
@pytest.mark.parametrize("path", ["/admin;x", "/public/..;/admin", "/x/..;/admin;y/"])
def test_strip_applies_the_rule_of_the_stripped_path(strip, path):
    assert_no_token(strip.get(path))


@pytest.mark.local_only
@pytest.mark.parametrize("path", ["/healthz/..%3B/admin", "/admin%3bx", "/%C0%AE%C0%AE/admin"])
def test_strip_still_refuses_encoded_semicolons_and_overlong_escapes(strip, path):
    assert_denied(strip.get(path), 400)


def test_two_authorization_headers_are_an_invalid_request(envoy, idp):
    token = idp.mint()
    before = counter(envoy.stats(), "okta_jwt_denied_multiple_tokens")
    headers = [("authorization", f"Bearer {token}"), ("authorization", f"Bearer {token}")]
    reply = envoy.get("/api/orders", headers=headers)
    body = assert_denied(reply, 400, challenge=INVALID_REQUEST)
    assert body["error"] == "invalid_request"
    assert token not in reply.body.decode(errors="replace")
    assert counter(envoy.stats(), "okta_jwt_denied_multiple_tokens") == before + 1


def test_one_token_with_another_scheme_beside_it_is_fine(envoy, idp):
    # A Basic header is not a bearer token, so the request carries one token.
    reply = envoy.get("/api/orders", idp.mint({"scp": ["orders:read"]}),
                      headers=[("x-other", "Basic dXNlcjpwdw==")])
    assert reply.status != 400, reply


@pytest.fixture(scope="module")
def urn(tmp_path_factory) -> Iterator[tuple[EnvoyClient, IdpClient]]:
    def build(variables):
        config = filter_config({"okta": {}}, [{"match": {"prefix": "/"}}])(variables)
        config["providers"]["okta"]["issuer"] = "urn:example:okta"
        return config
    stack = harness.start_stack(tmp_path_factory.mktemp("urn"), filter_config=build)
    try:
        yield EnvoyClient(stack.envoy_url, stack.admin_url), IdpClient(stack.idp_url)
    finally:
        stack.stop()


@pytest.mark.local_only
def test_an_issuer_that_is_not_a_url_is_compared_byte_for_byte(urn):
    envoy, idp = urn
    good = idp.mint({"iss": "urn:example:okta"})
    harness.wait_until(lambda: envoy.get("/x", good).status == 200, 30,
                       "the provider to have keys", interval=0.25)
    assert_allowed(envoy.get("/x", good))
    assert_invalid_token(envoy.get("/x", idp.mint({"iss": "urn:example:okta/"})))
