"""Observability: counters in Envoy's admin stats, and the denial log line."""

import json
import re

import pytest

from assertions import assert_allowed, assert_denied, assert_invalid_token, assert_no_token
from envoy_client import counter
from harness import wait_until

ORDERS = "/api/orders"
LOG_WAIT_S = 30  # a log line takes milliseconds to appear; a loaded machine may take seconds


def test_allowed_and_denied_counters_increase(envoy, idp):
    before = envoy.stats()
    for _ in range(2):
        assert_allowed(envoy.get(ORDERS, idp.mint()))
    assert_no_token(envoy.get(ORDERS))
    expired = idp.mint({"exp": 1_000_000_000, "iat": 999_999_000})
    assert_invalid_token(envoy.get(ORDERS, expired))
    rogue = idp.mint(signing_key="rogue")
    assert_invalid_token(envoy.get(ORDERS, rogue))
    after = envoy.stats()
    assert counter(after, "okta_jwt_allowed") - counter(before, "okta_jwt_allowed") == 2, after
    assert counter(after, "okta_jwt_denied") - counter(before, "okta_jwt_denied") == 3, after
    # The reason is part of the counter's name.
    grew = [k for k in after if "okta_jwt_denied" in k and after[k] > before.get(k, 0)]
    assert any("expir" in k for k in grew), grew


def test_jwks_fetch_counters(envoy, idp):
    assert_allowed(envoy.get(ORDERS, idp.mint()))
    assert_denied(envoy.get("/broken", idp.mint(server="broken")), 503)
    stats = envoy.stats()
    assert counter(stats, "okta_jwt_jwks_fetch_success") >= 1, stats
    assert counter(stats, "okta_jwt_jwks_fetch_failure") >= 1, stats


def test_counters_are_in_the_prometheus_output(envoy, idp):
    assert_allowed(envoy.get(ORDERS, idp.mint()))
    text = envoy.prometheus()
    assert re.search(r"^\S*okta_jwt_allowed\S*\s+[1-9]\d*$", text, re.M), text[-2000:]


@pytest.mark.local_only
def test_denial_is_logged_once_with_reason_and_request_id_never_the_token(envoy, idp,
                                                                          envoy_proc, unique):
    request_id = f"it-{unique}"
    sub = f"user-{unique}"
    token = idp.mint({"sub": sub, "exp": 1_000_000_000, "iat": 999_999_000})
    assert_invalid_token(envoy.get(ORDERS, token, headers={"x-request-id": request_id}), token)

    def denial_lines():
        return [l for l in envoy_proc.stderr().splitlines() if request_id in l]

    lines = wait_until(denial_lines, LOG_WAIT_S, "the denial's log line")
    assert len(lines) == 1, lines
    line = lines[0]
    assert "[info]" in line, line
    # Envoy writes "wasm log <plugin> <root_id> <vm_id>: <message>"; the message is one JSON
    # object (SPEC "Observability").
    message = json.loads(line[line.index("{", line.index("wasm log ")):])
    assert message["decision"] == "deny" and message["status"] == 401, line
    assert message["reason"] == "expired", f"no reason in: {line}"
    assert message["provider"] == "okta", f"no provider in: {line}"
    assert message["request_id"] == request_id and message["method"] == "GET", line
    assert message["path"] == ORDERS.split("?")[0] and message["alg"] == "RS256", line
    # Claims are checked before the signature, so the sub is only what the token claims.
    assert message["sub"] == sub, f"no sub in: {line}"
    assert message["identity"] == "unverified", f"sub not marked as only claimed in: {line}"


@pytest.mark.local_only
def test_tokens_never_reach_the_logs(envoy, idp, envoy_proc, unique):
    tokens = {
        "header": idp.mint({"sub": f"a-{unique}"}, signing_key="rogue"),
        "expired": idp.mint({"exp": 1_000_000_000, "iat": 999_999_000}),
        "query": idp.mint(signing_key="rogue"),
        "cookie": idp.mint({"aud": "api://other"}),
        "allowed": idp.mint(),
    }
    assert_invalid_token(envoy.get(ORDERS, tokens["header"]))
    assert_invalid_token(envoy.get(ORDERS, tokens["expired"]))
    assert_invalid_token(envoy.get(f"/query?access_token={tokens['query']}"))
    assert_invalid_token(envoy.get("/cookie", headers={"cookie": f"access_token={tokens['cookie']}"}))
    request_id = f"it-last-{unique}"
    assert_allowed(envoy.get(ORDERS, tokens["allowed"], headers={"x-request-id": request_id}))
    # The access log line of the last request comes after every log line of the others.
    wait_until(lambda: request_id in envoy_proc.stdout(), LOG_WAIT_S, "the access log line")
    log = envoy_proc.output()
    for source, token in tokens.items():
        signature = token.rsplit(".", 1)[1]
        assert token not in log and signature not in log, f"the {source} token is in the log"
