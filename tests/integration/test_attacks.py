"""Forgeries and hostile headers (RFC 8725): each must be a 401 invalid_token, and the
filter must never fetch anything a token points at."""

import json
import time

import pytest

from assertions import assert_allowed, assert_invalid_token
from idp_client import b64url, token_claims, token_header

READ = "/api/orders"


def test_signature_by_an_unpublished_key_is_invalid(envoy, idp):
    token = idp.mint(signing_key="rogue")  # header kid still names the current key
    assert_invalid_token(envoy.get(READ, token), token)


def test_tampered_payload_is_invalid(envoy, idp):
    h, _, s = idp.mint().split(".")
    claims = {**token_claims(idp.mint()), "scp": ["orders:read", "orders:write", "admin"]}
    token = f"{h}.{b64url(json.dumps(claims).encode())}.{s}"
    assert_invalid_token(envoy.get(READ, token), token)


def test_stripped_signature_is_invalid(envoy, idp):
    h, p, _ = idp.mint().split(".")
    token = f"{h}.{p}."
    assert_invalid_token(envoy.get(READ, token), token)


def test_unknown_kid_is_invalid_within_the_fetch_timeout(envoy, idp, unique):
    token = idp.mint(header={"kid": f"no-such-kid-{unique}"})
    started = time.monotonic()
    assert_invalid_token(envoy.get(READ, token), token)
    assert time.monotonic() - started < 10  # the refetch waits at most timeout_ms (5 s)


@pytest.mark.parametrize("alg_header", ["none", "None", "NONE"])
def test_alg_none_is_invalid(envoy, idp, alg_header):
    token = idp.mint(alg="none", header={"alg": alg_header})
    assert_invalid_token(envoy.get(READ, token), token)


def test_hs256_with_the_public_key_as_secret_is_invalid(envoy, idp):
    token = idp.mint(alg="HS256")
    assert_invalid_token(envoy.get(READ, token), token)


@pytest.mark.parametrize("alg", ["RS384", "RS512", "PS256"])
def test_algorithms_outside_the_allowed_list_are_invalid(envoy, idp, alg):
    token = idp.mint(alg=alg)  # validly signed, but the provider allows RS256 only
    assert_invalid_token(envoy.get(READ, token), token)


def test_header_alg_differing_from_the_signature_is_invalid(envoy, idp):
    token = idp.mint(alg="RS384", header={"alg": "RS256"})
    assert_invalid_token(envoy.get(READ, token), token)


def _current_public_jwk(idp) -> dict:
    kid = token_header(idp.mint())["kid"]
    return next(k for k in idp.keys()["keys"] if k["kid"] == kid)


# Each token below is signed by the current, published key and would otherwise be valid:
# the header parameter alone must get it rejected.
@pytest.mark.parametrize("header", [
    pytest.param(lambda idp: {"jku": f"{idp.url}/attacker/jku/keys.json"}, id="jku"),
    pytest.param(lambda idp: {"x5u": f"{idp.url}/attacker/x5u/cert.pem"}, id="x5u"),
    pytest.param(lambda idp: {"jwk": _current_public_jwk(idp)}, id="jwk"),
    pytest.param(lambda idp: {"x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]}, id="x5c"),
    pytest.param(lambda idp: {"crit": ["urn:example:unknown"],
                              "urn:example:unknown": True}, id="crit unknown"),
    pytest.param(lambda idp: {"crit": ["exp"]}, id="crit registered claim"),
    pytest.param(lambda idp: {"b64": False, "crit": ["b64"]}, id="b64 false"),
])
def test_dangerous_header_parameters_are_invalid(envoy, idp, header):
    token = idp.mint(header=header(idp))
    assert_invalid_token(envoy.get(READ, token), token)


def test_key_urls_in_tokens_are_never_fetched(envoy, idp, unique):
    for param in ("jku", "x5u"):
        token = idp.mint(header={param: f"{idp.url}/attacker/{unique}/{param}"})
        assert_invalid_token(envoy.get(READ, token), token)
    fetched = [k for k in idp.counts() if f"/attacker/{unique}/" in k]
    assert fetched == []


def _token_of_length(idp, low: int, high: int) -> str:
    """A validly signed token whose length is in [low, high], padded by a big claim."""
    pad = max(0, (high - len(idp.mint())) * 3 // 4)  # base64url: 4 characters per 3 bytes
    for _ in range(8):  # each step corrects by the measured miss
        token = idp.mint({"pad": "x" * pad})
        if low <= len(token) <= high:
            return token
        pad += ((low + high) // 2 - len(token)) * 3 // 4
    raise AssertionError(f"could not mint a token of {low}..{high} characters")


def test_token_just_under_8_kib_is_allowed(envoy, idp):
    assert_allowed(envoy.get(READ, _token_of_length(idp, 8100, 8192)))


def test_token_over_8_kib_is_rejected(envoy, idp):
    token = _token_of_length(idp, 8193, 8300)
    assert_invalid_token(envoy.get(READ, token), token)
    huge = _token_of_length(idp, 30_000, 31_000)
    assert_invalid_token(envoy.get(READ, huge), huge)
