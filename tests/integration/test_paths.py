"""Path normalization before rule matching. Envoy's own normalize_path / merge_slashes are
off in envoy/envoy.yaml.tmpl, so everything here is the filter's doing. Requests are sent
byte for byte (http.client), never normalized by the client."""

import pytest

from assertions import (assert_allowed, assert_claim_denied, assert_denied,
                    assert_insufficient_scope, assert_no_token)

READER_ADMIN = {"scp": ["orders:read"], "groups": ["Admins"]}  # may read, may not write


def assert_bad_path(reply):
    assert_denied(reply, 400)


@pytest.mark.parametrize("path", [
    "/healthz/../api/orders",
    "/public/../api/orders",
    "/public/./../api/orders",
    "/public/%2e%2e/api/orders",
    "/public/%2E%2E/api/orders",
    "/healthz/x/../../api/orders",
])
def test_dot_segments_never_make_a_protected_path_public(envoy, path):
    # Either refused as unsafe, or resolved to /api/orders (which needs a token).
    reply = envoy.get(path)
    if reply.status == 400:
        assert_bad_path(reply)
    else:
        assert_no_token(reply)


@pytest.mark.parametrize("path", ["/healthz/../api/orders", "/public/%2e%2e/api/orders"])
def test_dot_segments_resolve_to_the_rule_of_the_target(envoy, idp, path):
    # Resolved, POST /api/orders demands orders:write; refusing the path is fine too.
    reply = envoy.request("POST", path, idp.mint(READER_ADMIN), body=b"{}")
    if reply.status == 400:
        assert_bad_path(reply)
    else:
        assert_insufficient_scope(reply, "orders:write")


@pytest.mark.parametrize("path", [
    "/..",
    "/../api/orders",
    "/public/../../api/orders",
    "/healthz/../..",
    "/%2e%2e/healthz",
])
def test_dot_dot_above_the_root_is_400(envoy, path):
    assert_bad_path(envoy.get(path))


@pytest.mark.parametrize("path", [
    "/public%2F..%2Fapi%2Forders",
    "/public%2f..%2fapi%2forders",
    "/api%2Forders",
    "/healthz%2F",
    "/public%5C..%5Capi%5Corders",
    "/public%5c",
    "/public%00",
    "/healthz%00/x",
])
def test_encoded_slash_backslash_or_nul_is_400(envoy, path):
    assert_bad_path(envoy.get(path))


def test_bad_paths_are_400_even_with_a_valid_token(envoy, idp):
    assert_bad_path(envoy.get("/api%2Forders", idp.mint()))


@pytest.mark.parametrize("path", [
    "//healthz",
    "/./healthz",
    "/healthz/.",
    "/public/../healthz",
    "/%68ealthz",
    "/health%7A",
    "/healthz?next=/../../api/orders",
    "/healthz?q=%2F%00",
])
def test_normalized_paths_match_their_rule(envoy, path):
    assert_allowed(envoy.get(path))  # all of them are /healthz: auth none


@pytest.mark.parametrize("path", ["/api//orders", "/api/./orders", "//api///orders",
                                  "/api/%6Frders", "/%61pi/orders"])
def test_normalized_paths_get_the_protected_rule(envoy, idp, path):
    # The POST rule applies: a reader gets 403 insufficient_scope, not the no-rule default.
    reply = envoy.request("POST", path, idp.mint(READER_ADMIN), body=b"{}")
    assert_insufficient_scope(reply, "orders:write")


def test_template_parameters_are_normalized_before_equals_param(envoy, idp):
    token = idp.mint({"uid": "00u-demo-user"})
    assert_allowed(envoy.get("/users/%30%30u-demo-user/profile", token))
    assert_claim_denied(envoy.get("/users/00u-demo-user/../00u-other/profile", token))

