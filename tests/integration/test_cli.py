"""`okta-jwt explain` runs the filter's own decision code: every scenario below goes through the
session's real Envoy and through `explain` (same configuration, the IdP's published key sets,
the same request), and the status and reason must agree. Also the CLI's bad-input contract."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import harness
from envoy_client import EnvoyClient

pytestmark = pytest.mark.local_only

CLI_TIMEOUT_S = 30
TEMPLATE = harness.REPO / "envoy" / "filter.json.tmpl"


@pytest.fixture(scope="module")
def cli(tmp_path_factory) -> Path:
    subprocess.run(["make", "-s", "cli"], cwd=harness.REPO, check=True, timeout=1800)
    import os
    return harness.REPO / os.environ.get("CARGO_TARGET_DIR", "target") / "release" / "okta-jwt"


@pytest.fixture(scope="module")
def files(stack, idp, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("explain")
    config = d / "filter.json"
    config.write_text(TEMPLATE.read_text().replace("${IDP_URL}", stack.idp_url))
    out = {"config": config}
    for server in ("default", "strict", "rotating"):
        out[server] = d / f"{server}.json"
        out[server].write_text(json.dumps(idp.keys(server)))
    return out


def explain(cli: Path, files, token: str, method: str, path: str, headers) -> dict:
    args = [str(cli), "explain", "--config", str(files["config"]), "--token", token,
            "--method", method, "--path", path, "--json",
            "--jwks", f"okta={files['default']}", "--jwks", f"browser={files['default']}",
            "--jwks", f"strict={files['strict']}", "--jwks", f"rotating={files['rotating']}"]
    for name, value in headers:
        args += ["--header", f"{name}: {value}"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert r.returncode in (0, 1), r.stderr
    report = json.loads(r.stdout)
    assert r.returncode == (0 if report["allowed"] else 1)
    return report


def envoy_reason(envoy: EnvoyClient, method: str, path: str, headers) -> tuple[int, str | None]:
    """Status, and the reason whose counter moved (None when allowed)."""
    before = envoy.stats()
    reply = envoy.request(method, path, headers=headers)
    after = envoy.stats()
    moved = [name for name, v in after.items()
             if v > before.get(name, 0) and "okta_jwt_denied_" in name]
    reasons = [name.split("okta_jwt_denied_", 1)[1] for name in moved]
    assert len(reasons) <= 1, reasons
    return reply.status, (reasons[0] if reasons else None)


# (name, method, path, mint claims or None for a fixed string, mint options, where the token goes)
SCENARIOS = [
    ("allowed reader", "GET", "/api/orders", {"scp": ["orders:read"]}, {}, "bearer"),
    ("scope missing", "POST", "/api/orders", {"scp": ["orders:read"]}, {}, "bearer"),
    ("claim missing", "POST", "/api/orders", {"scp": ["orders:write"], "groups": ["Users"]}, {}, "bearer"),
    ("expired", "GET", "/api/orders", {"exp": 1_000_000_000, "iat": 999_999_000}, {}, "bearer"),
    ("wrong audience", "GET", "/api/orders", {"aud": "0oa-some-client"}, {}, "bearer"),
    ("trailing-slash issuer", "GET", "/api/orders", {"iss": "ISSUER/"}, {}, "bearer"),
    ("rogue key", "GET", "/api/orders", {}, {"signing_key": "rogue"}, "bearer"),
    ("alg not allowed", "GET", "/api/orders", {}, {"alg": "RS384"}, "bearer"),
    ("id token", "GET", "/api/orders", {"nonce": "n-1"}, {}, "bearer"),
    ("dpop-bound", "GET", "/api/orders", {"cnf": {"jkt": "abc"}}, {}, "bearer"),
    ("template match", "GET", "/users/00u-1/profile", {"uid": "00u-1"}, {}, "bearer"),
    ("template mismatch", "GET", "/users/00u-2/profile", {"uid": "00u-1"}, {}, "bearer"),
    ("other provider's issuer", "GET", "/strict/x", {}, {}, "bearer"),
    ("keys never fetched", "GET", "/broken/x", {}, {}, "bearer"),
    ("open route", "GET", "/healthz", {}, {}, "bearer"),
    ("cookie source", "GET", "/cookie", {}, {}, "cookie"),
    ("header the rule does not read", "GET", "/cookie", {}, {}, "bearer"),
    ("two tokens", "GET", "/api/orders", {}, {}, "twice"),
    ("encoded slash", "GET", "/api%2Forders", {}, {}, "bearer"),
    ("path parameter", "GET", "/api/orders;x", {}, {}, "bearer"),
    ("not a JWT", "GET", "/api/orders", None, {}, "bearer"),
]


@pytest.mark.parametrize("name,method,path,claims,opts,where", SCENARIOS,
                         ids=[s[0] for s in SCENARIOS])
def test_explain_agrees_with_envoy(cli, files, envoy, idp, name, method, path, claims, opts, where):
    if claims is None:
        token = "not-a-jwt"
    else:
        claims = {k: (v.replace("ISSUER", idp.issuer()) if isinstance(v, str) else v)
                  for k, v in claims.items()}
        token = idp.mint(claims, **opts)
    headers = {
        "bearer": [("authorization", f"Bearer {token}")],
        "cookie": [("cookie", f"access_token={token}")],
        "twice": [("authorization", f"Bearer {token}")] * 2,
    }[where]
    status, reason = envoy_reason(envoy, method, path, headers)
    report = explain(cli, files, token, method, path, headers)
    assert (report["status"], report["reason"]) == (status, reason), (name, report)
    names = [c["name"] for c in report["checks"]]
    assert names and names[0] == "path", report["checks"]
    failed = [c for c in report["checks"] if not c["ok"]]
    assert len(failed) == (0 if report["allowed"] else 1) or reason in ("missing_token",), report


def run(cli: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(cli), *args], capture_output=True, text=True, timeout=CLI_TIMEOUT_S)


def test_bad_input_is_one_line_and_exit_2(cli, files, tmp_path):
    not_a_set = tmp_path / "not-a-set.json"
    not_a_set.write_text('{"kids": []}')
    cases = [
        run(cli, "explain", "--config", str(tmp_path / "missing.json"), "--token", "t"),
        run(cli, "explain", "--config", str(files["config"]), "--token", "t", "--jwks", str(not_a_set)),
        run(cli, "explain", "--config", str(files["config"]), "--token-file", str(tmp_path / "nope")),
        run(cli, "decode", "not-a-jwt"),
        run(cli, "validate", str(tmp_path / "missing.json")),
    ]
    for r in cases:
        assert r.returncode == 2, r
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "panicked" not in r.stderr


def test_validate_reports_every_broken_provider_and_rule(cli, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({
        "providers": {"a": {"issuer": "", "audiences": ["x"], "jwks": {"uri": "https://i/k", "cluster": "c"}},
                      "b": {"issuer": "i", "audiences": [], "jwks": {"uri": "https://i/k", "cluster": "c"}}},
        "rules": [{"match": {"prefix": "nope"}}]}))
    r = run(cli, "validate", str(bad))
    assert r.returncode == 1
    assert r.stderr.splitlines() == ["providers.a.issuer: must not be empty",
                                     "providers.b.audiences: must not be empty",
                                     'rules[0].match.prefix: must start with "/"'], r.stderr
    r = run(cli, "validate", str(harness.REPO / "envoy" / "production.yaml"))
    assert r.returncode == 1


def test_decode_shows_times_and_never_verifies(cli, idp):
    token = idp.mint({"sub": "alice"}, signing_key="rogue")
    r = run(cli, "decode", token)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["claims"]["sub"] == "alice" and out["verified"] is False
    assert out["times"]["exp"].endswith("Z")
