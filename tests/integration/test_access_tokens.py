"""Access tokens only (SPEC "Access tokens only"): ID tokens and other JWTs the IdP signs with
the same keys are refused; and a sender-constrained token sent as a plain Bearer token (no
DPoP proof, no client certificate) never passes (test_dpop.py and test_mtls.py cover the
proofs and certificates that do bind them)."""

import pytest

from assertions import assert_allowed, assert_invalid_token
from envoy_client import counter


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+jwt", "application/at+jwt"])
def test_access_token_types_are_accepted(envoy, idp, typ):
    assert_allowed(envoy.get("/x", idp.mint(header={"typ": typ})))


@pytest.mark.parametrize("header,claims", [
    ({"typ": "application/jwt"}, {}),
    ({"typ": "logout+jwt"}, {}),
    ({"typ": "dpop+jwt"}, {}),
    ({}, {"nonce": "n-0S6_WzA2Mj"}),
    ({}, {"at_hash": "77QmUPtjPfzWtF2AnpK9RQ"}),
])
def test_id_tokens_and_other_jwts_are_not_access_tokens(envoy, idp, header, claims):
    token = idp.mint(claims, header=header)
    before = counter(envoy.stats(), "okta_jwt_denied_not_access_token")
    assert_invalid_token(envoy.get("/x", token), token)
    assert counter(envoy.stats(), "okta_jwt_denied_not_access_token") == before + 1


@pytest.mark.parametrize("cnf,reason", [
    ({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}, "dpop_bound_token"),
    ({"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}, "certificate_mismatch"),
])
def test_bound_tokens_are_never_accepted_as_bearer_tokens(envoy, idp, cnf, reason):
    token = idp.mint({"cnf": cnf})
    before = counter(envoy.stats(), f"okta_jwt_denied_{reason}")
    assert_invalid_token(envoy.get("/x", token), token)
    assert counter(envoy.stats(), f"okta_jwt_denied_{reason}") == before + 1
