"""JWKS fetching on the session stack: 503 when a provider never got keys.

The key-set lifecycle (discovery, refetch on an unknown kid, rotation, stale keys on failure,
worker sharing, Cache-Control, stats) is in test_jwks_lifecycle.py, on stacks of its own.
"""

from assertions import assert_denied


def test_provider_without_keys_is_503(envoy, idp):
    reply = envoy.get("/broken", idp.mint(server="broken"))  # its JWKS URI answers 404
    assert_denied(reply, 503)
    retry_after = reply.header("retry-after")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) > 0, reply


def test_provider_without_keys_still_says_401_without_a_token(envoy):
    assert_denied(envoy.get("/broken"), 401, challenge='Bearer realm="api"')
