"""HTTP helpers for the tests: requests through Envoy, the mock IdP's control API, Envoy's
admin stats, and the assertions every test module shares."""

from __future__ import annotations

import base64
import http.client
import json
import re
import threading
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import requests

REALM = "api"  # envoy/filter.json.tmpl
CHALLENGE_NO_TOKEN = f'Bearer realm="{REALM}"'
CHALLENGE_INVALID_TOKEN = re.compile(
    rf'Bearer realm="{REALM}", error="invalid_token", error_description="[^"\\]+"')


def challenge_insufficient_scope(scopes: str) -> str:
    return f'Bearer realm="{REALM}", error="insufficient_scope", scope="{scopes}"'


ABSENT = object()  # sentinel: the header must not be in the response

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]  # as received, names lowercased
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return ", ".join(values) if values else None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:  # shown by pytest when an assertion fails
        return f"Reply({self.status}, {self.headers!r}, {self.body[:600]!r})"


def idp_provider(idp_url: str, server: str = "default", **extra) -> dict:
    """A provider for the mock IdP's authorization server `server`, keys fetched through the
    stack's `okta_idp` cluster; `extra` adds or overrides provider fields."""
    return {"issuer": f"{idp_url}/oauth2/{server}", "audiences": ["api://default"],
            "jwks": {"uri": f"{idp_url}/oauth2/{server}/v1/keys", "cluster": "okta_idp"},
            **extra}


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token_claims(token: str) -> dict:
    return json.loads(b64url_decode(token.split(".")[1]))


class Api:
    """One object per stack: talks to Envoy, the IdP and Envoy's admin interface."""

    def __init__(self, envoy_url: str, idp_url: str, admin_url: str, timeout: float = 20.0):
        self.envoy = urllib.parse.urlsplit(envoy_url)
        self.envoy_url, self.idp_url, self.admin_url = envoy_url, idp_url, admin_url
        self.timeout = timeout  # above every filter-side wait (JWKS timeout_ms 5000)
        self.http = requests.Session()
        self.http.trust_env = False  # no proxies or .netrc credentials from the environment

    # -- through Envoy ---------------------------------------------------------------
    def request(self, method: str, path: str, token: str | None = None,
                headers: Headers = (), body: bytes | None = None,
                source: str | None = None) -> Reply:
        """Send `path` byte for byte (no client-side normalization of `..` or `%2F`),
        on a fresh connection so that requests spread over Envoy's workers. `source` is the
        local address to connect from (e.g. "127.0.0.2": all of 127/8 is loopback on Linux),
        for what the filter keys on the client address."""
        pairs = list(headers.items() if isinstance(headers, Mapping) else headers)
        if token is not None:
            pairs.append(("authorization", f"Bearer {token}"))
        conn = http.client.HTTPConnection(self.envoy.hostname, self.envoy.port,
                                          timeout=self.timeout,
                                          source_address=source and (source, 0))
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in pairs:
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("content-length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            return Reply(resp.status, [(k.lower(), v) for k, v in resp.getheaders()],
                         resp.read())
        finally:
            conn.close()

    def get(self, path: str, token: str | None = None, headers: Headers = (),
            source: str | None = None) -> Reply:
        return self.request("GET", path, token, headers, source=source)

    def send_many(self, method: str, path: str, headers: Sequence[Headers],
                  connections: int = 16) -> list[int]:
        """Request `i` carries `headers[i]`; returns the statuses, in that order (bodies are
        read and dropped). As fast as this client goes: `connections` threads, each with one
        keep-alive connection (reopened if Envoy closes it), so only `connections` sockets
        spread over the workers, unlike `request`."""
        statuses: list[int] = [0] * len(headers)
        failures: list[BaseException] = []

        def worker(first: int) -> None:
            conn = None
            try:
                for i in range(first, len(headers), connections):
                    h = headers[i]
                    pairs = list(h.items() if isinstance(h, Mapping) else h)
                    if conn is None:
                        conn = http.client.HTTPConnection(
                            self.envoy.hostname, self.envoy.port, timeout=self.timeout)
                    conn.putrequest(method, path, skip_accept_encoding=True)
                    for name, value in pairs:
                        conn.putheader(name, value)
                    conn.endheaders()
                    resp = conn.getresponse()
                    resp.read()
                    statuses[i] = resp.status
                    if resp.will_close:
                        conn.close()
                        conn = None
            except BaseException as e:  # reported by the caller's thread
                failures.append(e)
            finally:
                if conn is not None:
                    conn.close()

        threads = [threading.Thread(target=worker, args=(t,), daemon=True)
                   for t in range(min(connections, len(headers)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures:
            raise failures[0]
        return statuses

    # -- the mock IdP ----------------------------------------------------------------
    def control(self, endpoint: str, body: dict | None = None) -> dict:
        url = f"{self.idp_url}/control/{endpoint}"
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
        return self.control("mint", body)["token"]

    def issuer(self, server: str = "default") -> str:
        """The issuer the IdP puts in tokens, which the filter config names too."""
        return f"{self.idp_url}/oauth2/{server}"

    def idp_counts(self) -> dict[str, int]:
        return self.control("counts")

    def token_endpoint(self, server: str = "default", *, auth=None, data=None) -> requests.Response:
        return self.http.post(f"{self.idp_url}/oauth2/{server}/v1/token", auth=auth,
                              data=data, timeout=self.timeout)

    # -- Envoy admin -----------------------------------------------------------------
    def stats(self, filter_: str = "okta_jwt") -> dict[str, int]:
        """Counters and gauges from `/stats?filter=...` (histograms are skipped)."""
        r = self.http.get(f"{self.admin_url}/stats", params={"filter": filter_},
                          timeout=self.timeout)
        r.raise_for_status()
        stats = {}
        for line in r.text.splitlines():
            name, sep, value = line.rpartition(": ")
            if sep and value.strip().isdigit():
                stats[name] = int(value)
        return stats


def counter(stats: dict[str, int], name: str) -> int:
    """Sum of the stats whose name contains `name`: Envoy prefixes Wasm metrics
    (`wasmcustom.`), and `okta_jwt_denied` covers every `okta_jwt_denied_<reason>`."""
    return sum(v for k, v in stats.items() if name in k)


def stat(stats: dict[str, int], name: str) -> int:
    """The value of the one stat named `name` (after Envoy's prefix, e.g. `wasmcustom.`);
    fails if there is no such stat, so that a missing stat never reads as 0."""
    found = [v for k, v in stats.items() if k == name or k.endswith("." + name)]
    assert len(found) == 1, f"{len(found)} stats named {name}: {sorted(stats)}"
    return found[0]


_WORKER_CX = re.compile(r"\.(worker_\d+)\.downstream_cx_total$")


def connections_per_worker(api: Api) -> Counter:
    """Downstream connections accepted so far by each Envoy worker (all listeners)."""
    per = Counter()
    for name, value in api.stats(r"worker_[0-9]+\.downstream_cx_total").items():
        m = _WORKER_CX.search(name)
        if m:
            per[m.group(1)] += value
    return per


def workers_used(before: Counter, after: Counter) -> int:
    """How many workers accepted connections between two `connections_per_worker` reads."""
    return sum(1 for w in after if after[w] > before.get(w, 0))


# -- assertions --------------------------------------------------------------------------

def is_echo(reply: Reply) -> bool:
    try:
        body = reply.json()
    except ValueError:
        return False
    return isinstance(body, dict) and {"method", "path", "headers"} <= body.keys()


def assert_allowed(reply: Reply) -> dict:
    """The request reached the echo upstream; returns what the upstream received."""
    assert reply.status == 200 and is_echo(reply), reply
    return reply.json()


def assert_denied(reply: Reply, status: int, *, challenge=ABSENT,
                  error: str | None = None, token: str | None = None) -> dict:
    """A denial made by the filter: exact status, `WWW-Authenticate` (an exact string, a
    compiled pattern that must match all of it, or ABSENT), JSON error body."""
    assert reply.status == status, reply
    assert not is_echo(reply), f"the request reached the upstream: {reply!r}"
    www = reply.header_all("www-authenticate")
    if challenge is ABSENT:
        assert www == [], reply
    elif isinstance(challenge, re.Pattern):
        assert len(www) == 1 and challenge.fullmatch(www[0]), reply
    else:
        assert www == [challenge], reply
    content_type = reply.header("content-type") or ""
    assert content_type.split(";")[0].strip().lower() == "application/json", reply
    body = reply.json()
    assert isinstance(body, dict), reply
    for key in ("error", "error_description"):
        assert isinstance(body.get(key), str) and body[key], reply
    if error is not None:
        assert body["error"] == error, reply
    if token is not None:
        assert token not in reply.body.decode(errors="replace"), "the denial echoes the token"
        assert all(token not in v for _, v in reply.headers), "a header echoes the token"
    return body


def assert_no_token(reply: Reply) -> dict:
    return assert_denied(reply, 401, challenge=CHALLENGE_NO_TOKEN)


def assert_invalid_token(reply: Reply, token: str | None = None) -> dict:
    return assert_denied(reply, 401, challenge=CHALLENGE_INVALID_TOKEN, error="invalid_token",
                         token=token)


def assert_insufficient_scope(reply: Reply, scopes: str) -> dict:
    return assert_denied(reply, 403, challenge=challenge_insufficient_scope(scopes),
                         error="insufficient_scope")


def assert_claim_denied(reply: Reply) -> dict:
    return assert_denied(reply, 403)
