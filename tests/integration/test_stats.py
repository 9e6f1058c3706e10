"""Observability: counters in Envoy's admin stats, and the denial log line."""

import re

import pytest

from client import (assert_allowed, assert_denied, assert_invalid_token, assert_no_token,
                    counter)
from harness import wait_until

ORDERS = "/api/orders"


def test_allowed_and_denied_counters_increase(api):
    before = api.stats()
    for _ in range(2):
        assert_allowed(api.get(ORDERS, api.mint()))
    assert_no_token(api.get(ORDERS))
    expired = api.mint({"exp": 1_000_000_000, "iat": 999_999_000})
    assert_invalid_token(api.get(ORDERS, expired))
    rogue = api.mint(signing_key="rogue")
    assert_invalid_token(api.get(ORDERS, rogue))
    after = api.stats()
    assert counter(after, "okta_jwt_allowed") - counter(before, "okta_jwt_allowed") == 2, after
    assert counter(after, "okta_jwt_denied") - counter(before, "okta_jwt_denied") == 3, after
    # The reason is part of the counter's name.
    grew = [k for k in after if "okta_jwt_denied" in k and after[k] > before.get(k, 0)]
    assert any("expir" in k for k in grew), grew


def test_jwks_fetch_counters(api):
    assert_allowed(api.get(ORDERS, api.mint()))
    assert_denied(api.get("/broken", api.mint(server="broken")), 503)
    stats = api.stats()
    assert counter(stats, "okta_jwt_jwks_fetch_success") >= 1, stats
    assert counter(stats, "okta_jwt_jwks_fetch_failure") >= 1, stats


def test_counters_are_in_the_prometheus_output(api):
    assert_allowed(api.get(ORDERS, api.mint()))
    text = api.http.get(f"{api.admin_url}/stats/prometheus", timeout=api.timeout).text
    assert re.search(r"^\S*okta_jwt_allowed\S*\s+[1-9]\d*$", text, re.M), text[-2000:]


@pytest.mark.local_only
def test_denial_is_logged_once_with_reason_and_request_id_never_the_token(api, envoy_proc,
                                                                          unique):
    request_id = f"it-{unique}"
    sub = f"user-{unique}"
    token = api.mint({"sub": sub, "exp": 1_000_000_000, "iat": 999_999_000})
    assert_invalid_token(api.get(ORDERS, token, headers={"x-request-id": request_id}), token)

    def denial_lines():
        return [l for l in envoy_proc.stderr().splitlines() if request_id in l]

    lines = wait_until(denial_lines, 10, "the denial's log line")
    assert len(lines) == 1, lines
    line = lines[0]
    assert "[info]" in line, line
    # Envoy writes "wasm log <plugin> <root_id> <vm_id>: <message>".
    message = line.partition("wasm log ")[2].partition(": ")[2] or line
    assert re.search(r"expir", message, re.I), f"no reason in: {line}"
    assert re.search(r"\bokta\b", message), f"no provider in: {line}"
    # Claims are checked before the signature, so the sub is only what the token claims.
    assert f'sub="{sub}"' in message, f"no sub in: {line}"
    assert "identity=unverified" in message, f"sub not marked as only claimed in: {line}"


@pytest.mark.local_only
def test_tokens_never_reach_the_logs(api, envoy_proc, unique):
    tokens = {
        "header": api.mint({"sub": f"a-{unique}"}, signing_key="rogue"),
        "expired": api.mint({"exp": 1_000_000_000, "iat": 999_999_000}),
        "query": api.mint(signing_key="rogue"),
        "cookie": api.mint({"aud": "api://other"}),
        "allowed": api.mint(),
    }
    assert_invalid_token(api.get(ORDERS, tokens["header"]))
    assert_invalid_token(api.get(ORDERS, tokens["expired"]))
    assert_invalid_token(api.get(f"/query?access_token={tokens['query']}"))
    assert_invalid_token(api.get("/cookie", headers={"cookie": f"access_token={tokens['cookie']}"}))
    request_id = f"it-last-{unique}"
    assert_allowed(api.get(ORDERS, tokens["allowed"], headers={"x-request-id": request_id}))
    # The access log line of the last request comes after every log line of the others.
    wait_until(lambda: request_id in envoy_proc.stdout(), 10, "the access log line")
    log = envoy_proc.output()
    for source, token in tokens.items():
        signature = token.rsplit(".", 1)[1]
        assert token not in log and signature not in log, f"the {source} token is in the log"
