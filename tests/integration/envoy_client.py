"""The client side of Envoy: requests through its listener, and its admin stats."""

from __future__ import annotations

import http.client
import json
import re
import threading
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import requests

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


class EnvoyClient:
    """Requests through one Envoy listener (`url`), and that Envoy's admin stats."""

    def __init__(self, url: str, admin_url: str, timeout: float = 20.0):
        self.url, self.admin_url = url, admin_url
        self.listener = urllib.parse.urlsplit(url)
        self.timeout = timeout  # above every filter-side wait (JWKS timeout_ms 5000)
        self.http = requests.Session()
        self.http.trust_env = False  # no proxies or .netrc credentials from the environment

    # -- through the listener -----------------------------------------------------------
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
        conn = http.client.HTTPConnection(self.listener.hostname, self.listener.port,
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
                            self.listener.hostname, self.listener.port, timeout=self.timeout)
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

    # -- the admin interface ------------------------------------------------------------
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

    def upstream_idle(self, cluster: str) -> bool:
        """No request of Envoy's own to `cluster` (for okta_idp: the filter's key fetches) is
        pending or under way: every one dispatched so far has been answered or given up."""
        gauges = self.stats(rf"^cluster\.{re.escape(cluster)}\.upstream_rq_(pending_)?active$")
        assert len(gauges) == 2, f"no request gauges for cluster {cluster}: {gauges}"
        return not any(gauges.values())

    def prometheus(self) -> str:
        r = self.http.get(f"{self.admin_url}/stats/prometheus", timeout=self.timeout)
        r.raise_for_status()
        return r.text


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


def connections_per_worker(envoy: EnvoyClient) -> Counter:
    """Downstream connections accepted so far by each Envoy worker (all listeners)."""
    per = Counter()
    for name, value in envoy.stats(r"worker_[0-9]+\.downstream_cx_total").items():
        m = _WORKER_CX.search(name)
        if m:
            per[m.group(1)] += value
    return per


def workers_used(before: Counter, after: Counter) -> int:
    """How many workers accepted connections between two `connections_per_worker` reads."""
    return sum(1 for w in after if after[w] > before.get(w, 0))
