"""The client side of the mock IdP (tests/mock-idp): its control API (mint tokens, count
requests, inject faults, rotate keys), its public endpoints, and reading the tokens it mints."""

from __future__ import annotations

import base64
import json

import requests


# Every token minted in this test session: test_zz_no_token_in_logs.py looks for each in
# every Envoy log the suite wrote.
MINTED: set[str] = set()


class IdpClient:
    """One mock IdP, at `url` (the URL its issuers are built from)."""

    def __init__(self, url: str, timeout: float = 20.0):
        self.url = url
        self.timeout = timeout
        self.http = requests.Session()
        self.http.trust_env = False  # no proxies or .netrc credentials from the environment

    # -- the control API ----------------------------------------------------------------
    def control(self, endpoint: str, body: dict | None = None) -> dict:
        url = f"{self.url}/control/{endpoint}"
        r = (self.http.get(url, timeout=self.timeout) if body is None
             else self.http.post(url, json=body, timeout=self.timeout))
        r.raise_for_status()
        return r.json()

    def mint(self, claims: dict | None = None, *, server: str = "default",
             header: dict | None = None, alg: str | None = None,
             lifetime_s: int | None = None, signing_key: str | None = None) -> str:
        body = {"server": server, "claims": claims or {}, "header": header or {}}
        for key, value in (("alg", alg), ("lifetime_s", lifetime_s),
                           ("signing_key", signing_key)):
            if value is not None:
                body[key] = value
        token = self.control("mint", body)["token"]
        MINTED.add(token)
        return token

    def counts(self) -> dict[str, int]:
        """Requests served so far, by "METHOD /path"."""
        return self.control("counts")

    # -- the public endpoints -----------------------------------------------------------
    def issuer(self, server: str = "default") -> str:
        """The issuer the IdP puts in tokens, which the filter config names too."""
        return f"{self.url}/oauth2/{server}"

    def keys(self, server: str = "default") -> dict:
        """The key set (JWKS) authorization server `server` publishes."""
        r = self.http.get(f"{self.issuer(server)}/v1/keys", timeout=self.timeout)
        r.raise_for_status()
        return r.json()

    def token_endpoint(self, server: str = "default", *, auth=None, data=None) -> requests.Response:
        return self.http.post(f"{self.issuer(server)}/v1/token", auth=auth, data=data,
                              timeout=self.timeout)


# -- the tokens ----------------------------------------------------------------------------

def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token_header(token: str) -> dict:
    return json.loads(b64url_decode(token.split(".")[0]))


def token_claims(token: str) -> dict:
    return json.loads(b64url_decode(token.split(".")[1]))
