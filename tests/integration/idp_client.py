"""The client side of the mock IdP (tests/mock-idp): its control API (mint tokens, count
requests, inject faults, rotate keys, see the last introspection request), its public endpoints
(keys, token, introspect, revoke), and reading the tokens it mints."""

from __future__ import annotations

import base64
import hashlib
import json

import requests


# Every token minted in this test session: test_zz_no_token_in_logs.py looks for each in
# every Envoy log the suite wrote.
MINTED: set[str] = set()

# The mock's built-in confidential clients, (id, secret), valid on every server.
DEMO_CLIENT = ("0oa-demo-client", "demo-secret")
OTHER_CLIENT = ("0oa-other-client", "other-secret")

# Okta's org authorization server: issuer = the IdP's URL, endpoints at /oauth2/v1/..., and its
# token endpoint mints opaque tokens.
ORG = "org"


class IdpClient:
    """One mock IdP, at `url` (the URL its issuers are built from)."""

    def __init__(self, url: str, timeout: float = 20.0):
        self.url = url
        self.timeout = timeout
        self.http = requests.Session()
        self.http.trust_env = False  # no proxies or .netrc credentials from the environment
        self.minted_at: dict[str, str] = {}  # token -> the server that minted it (for revoke)

    # -- the control API ----------------------------------------------------------------
    def control(self, endpoint: str, body: dict | None = None) -> dict:
        url = f"{self.url}/control/{endpoint}"
        r = (self.http.get(url, timeout=self.timeout) if body is None
             else self.http.post(url, json=body, timeout=self.timeout))
        r.raise_for_status()
        return r.json()

    def mint(self, claims: dict | None = None, *, server: str = "default",
             header: dict | None = None, alg: str | None = None,
             lifetime_s: int | None = None, signing_key: str | None = None,
             introspection_extra: dict | None = None) -> str:
        """A JWT; `introspection_extra` is merged into every introspection answer about it."""
        body = {"server": server, "claims": claims or {}, "header": header or {}}
        for key, value in (("alg", alg), ("lifetime_s", lifetime_s),
                           ("signing_key", signing_key),
                           ("introspection_extra", introspection_extra)):
            if value is not None:
                body[key] = value
        token = self.control("mint", body)["token"]
        MINTED.add(token)
        self.minted_at[token] = server
        return token

    def mint_opaque(self, claims: dict | None = None, *, server: str = ORG,
                    lifetime_s: int | None = None,
                    introspection_extra: dict | None = None) -> str:
        """An opaque token (no JWS) whose introspection answer carries `claims`: overrides of
        the Okta-shaped defaults (`sub`, `scp` or `scope`, `cid` or `client_id`, `uid`,
        `username`, `exp`, any extra claim; `None` removes one). `introspection_extra` is
        merged into every answer about it, e.g. {"exp": "soon"} or {"active": "true"}."""
        body: dict = {"server": server, "opaque": True, "claims": claims or {}}
        for key, value in (("lifetime_s", lifetime_s),
                           ("introspection_extra", introspection_extra)):
            if value is not None:
                body[key] = value
        token = self.control("mint", body)["token"]
        MINTED.add(token)
        self.minted_at[token] = server
        return token

    def counts(self) -> dict[str, int]:
        """Requests served so far, by "METHOD /path"."""
        return self.control("counts")

    def introspect_count(self, server: str = "default") -> int:
        """Introspection requests `server` got so far (for `org`, at both of its paths)."""
        counts = self.counts()
        paths = {f"/oauth2/{server}/v1/introspect", self.endpoint("introspect", server)
                 .removeprefix(self.url)}
        return sum(counts.get(f"POST {path}", 0) for path in paths)

    def fault(self, mode: str | int, *, server: str = "default", endpoint: str = "keys",
              delay_ms: int | None = None) -> dict:
        """How `endpoint` ("keys" or "introspect") of `server` answers from now on: "none",
        "500", "slow" (after `delay_ms`), "malformed", "empty", "drop"; introspect also
        "active_not_bool" and "oversize" (a valid JSON answer over 64 KiB)."""
        body = {"server": server, "endpoint": endpoint, "mode": mode}
        if delay_ms is not None:
            body["delay_ms"] = delay_ms
        return self.control("fault", body)

    def introspect_fault(self, mode: str | int, *, server: str = "default",
                         delay_ms: int | None = None) -> dict:
        return self.fault(mode, server=server, endpoint="introspect", delay_ms=delay_ms)

    def introspect_last(self) -> dict | None:
        """The shape of the last introspection request (None if none since the last reset):
        method, path, has_query, content_type, authorization_scheme, auth ("basic", "form",
        "none"), client_id, secret_ok, form_keys, form_error, token_type_hint, token_sha256
        (compare with token_sha256(token)), seq (requests since the last reset)."""
        return self.control("introspect-last")

    def reset(self) -> None:
        """Zero the counts, forget the last introspection request, clear every fault."""
        self.control("reset", {})

    # -- the public endpoints -----------------------------------------------------------
    def issuer(self, server: str = "default") -> str:
        """The issuer the IdP puts in tokens, which the filter config names too."""
        return self.url if server == ORG else f"{self.url}/oauth2/{server}"

    def endpoint(self, name: str, server: str = "default") -> str:
        """The URL of `keys`, `token`, `introspect` or `revoke` (the org server: Okta's paths)."""
        base = f"{self.url}/oauth2" if server == ORG else self.issuer(server)
        return f"{base}/v1/{name}"

    def introspection_uri(self, server: str = "default") -> str:
        return self.endpoint("introspect", server)

    def keys(self, server: str = "default") -> dict:
        """The key set (JWKS) authorization server `server` publishes."""
        r = self.http.get(self.endpoint("keys", server), timeout=self.timeout)
        r.raise_for_status()
        return r.json()

    def token_endpoint(self, server: str = "default", *, auth=None, data=None) -> requests.Response:
        return self.http.post(self.endpoint("token", server), auth=auth, data=data,
                              timeout=self.timeout)

    def introspect(self, token: str, *, server: str = "default", client=DEMO_CLIENT,
                   hint: str | None = "access_token") -> requests.Response:
        """POST the token to `server`'s introspection endpoint, as the filter does."""
        data = {"token": token, **({"token_type_hint": hint} if hint else {})}
        return self.http.post(self.endpoint("introspect", server), auth=client, data=data,
                              timeout=self.timeout)

    def revoke(self, token: str, *, server: str | None = None, client=DEMO_CLIENT,
               hint: str | None = None) -> None:
        """Revoke the token (RFC 7009) at `server`, by default the one that minted it here
        (else "default"); from then on the IdP introspects it as inactive."""
        server = server or self.minted_at.get(token, "default")
        data = {"token": token, **({"token_type_hint": hint} if hint else {})}
        r = self.http.post(self.endpoint("revoke", server), auth=client, data=data,
                           timeout=self.timeout)
        r.raise_for_status()


# -- the tokens ----------------------------------------------------------------------------

def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token_sha256(token: str) -> str:
    """What introspect_last() reports as `token_sha256` (the IdP never echoes a token)."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_header(token: str) -> dict:
    return json.loads(b64url_decode(token.split(".")[0]))


def token_claims(token: str) -> dict:
    return json.loads(b64url_decode(token.split(".")[1]))
